"""The camera source contract, and the frame that every source delivers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from appliance.cameras.uri import CameraUri
from appliance.errors import ApplianceError
from appliance.inference.imaging import Image


class CameraError(ApplianceError):
    """A camera that cannot be opened or stopped delivering frames."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One grabbed frame of one camera slot."""

    camera: int  # slot: 0 or 1
    index: int  # counts every frame the source delivered since the grabber started, across reopens
    time: float  # time.monotonic() when it was grabbed
    image: Image  # BGR uint8, (height, width, 3)


@dataclass(frozen=True)
class SourceSettings:
    """What the configuration asks of every source (sources that have their own size and rate keep them)."""

    width: int = 640
    height: int = 480
    fps: float = 10.0
    # The detector's input (width, height): a source with a stream of its own for detection sizes
    # that stream to fit it, so the letterbox has nothing to resize. None: not known (capture).
    detect_size: tuple[int, int] | None = None


class CameraSource(ABC):
    """One camera: ``start`` opens it, ``read`` blocks for the next frame, ``stop`` releases it.

    A source is used from one thread (its grabber's). ``read`` returns None when a finite source
    (a file played once) has ended, and raises CameraError when the camera fails; the grabber
    then stops it and, after a back-off, starts it again.
    """

    def __init__(self, uri: CameraUri, settings: SourceSettings) -> None:
        self.uri, self.settings = uri, settings

    @property
    def fps(self) -> float:
        """Frames per second the source delivers (known after ``start``)."""
        return self.settings.fps

    def check(self) -> None:  # noqa: B027  (most sources have nothing to check before they open)
        """What can be known wrong without opening the device (a scenario that does not exist); raises
        CameraError. `appliance check` and `run` call it at start-up: a camera that cannot be opened is
        retried, one that can never be is a configuration error."""

    @abstractmethod
    def start(self) -> None:
        """Open the camera; raises CameraError naming the URI and the cause."""

    @abstractmethod
    def read(self) -> Image | None:
        """The next frame (BGR), waiting for it; None at the end of a finite source."""

    @abstractmethod
    def stop(self) -> None:
        """Release the camera; safe to call more than once, and after a failed start."""
