"""One thread per camera slot: reads its source, keeps the newest frame, and reopens it when it fails.

Detection is slower than the cameras, so the grabber keeps only the newest frame (never a queue
that would grow and lag behind); listeners such as the recorder's pre-roll see every frame, in
the grabber's thread. A source that fails (it cannot start, ``read`` raises, or anything
unexpected happens) is stopped and started again after a back-off that doubles from ``backoff``
to ``backoff_max`` and starts over once frames flow again. A finite source that ends (a file
played once) ends the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.cameras.source import CameraError, CameraSource, Frame
from appliance.inference.imaging import Image

logger = logging.getLogger(__name__)

OK, FAILED, ENDED = "ok", "failed", "ended"
FrameListener = Callable[[Frame], None]
StateListener = Callable[[str, str | None], None]
_RATE_WINDOW = 30  # frames over which the measured rate is averaged
STALL_S = 5.0  # no frame for this long (or ten frame periods, if longer) is a stall
# A read that has not returned for this long has outlived every source's own timeout (10 s for
# streams): the thread is hung, which a restart of the process may mend.
HUNG_S = 60.0


@dataclass(frozen=True)
class GrabberStats:
    camera: int
    name: str
    state: str | None  # ok, failed or ended; None before the first frame or failure
    error: str | None  # why it failed, while its state is failed
    frames: int  # delivered since the grabber started, across reopens
    failures: int
    last_frame_time: float | None  # time.monotonic() of the newest frame
    fps: float  # measured over the latest frames


class Grabber:
    """Runs camera slot ``camera`` (named ``name``) from sources made by ``factory``."""

    def __init__(
        self,
        camera: int,
        name: str,
        factory: Callable[[], CameraSource],
        on_frame: Iterable[FrameListener] = (),
        on_state: StateListener | None = None,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.camera, self.name = camera, name
        self._factory = factory
        self._listeners = list(on_frame)
        self._failing_listeners: set[int] = set()  # ids of listeners whose last call raised
        self._on_state = on_state
        self.backoff, self.backoff_max = backoff, backoff_max
        self._stopping = threading.Event()
        self._changed = threading.Condition()  # guards the fields below; notified on every frame
        self._latest: Frame | None = None
        self._state: str | None = None
        self._error: str | None = None
        self._frames = 0
        self._failures = 0
        self._times: deque[float] = deque(maxlen=_RATE_WINDOW)
        self._source_fps: float | None = None
        self._source: CameraSource | None = None
        self._thread = threading.Thread(target=self._run, name=f"grabber-{camera}-{name}", daemon=True)

    def add_frame_listener(self, listener: FrameListener) -> None:
        """Call ``listener`` with every frame from now on, in the grabber's thread; it must be quick."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the thread and its source; waits up to ``timeout`` for a read in progress to return."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("camera %d (%s): still reading after %g s; left behind", self.camera, self.name, timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def source(self) -> CameraSource | None:
        """The source while it is started: a reopen makes a new one (the recorder follows its ``camera``)."""
        return self._source

    @property
    def state(self) -> str | None:
        return self._state

    def latest(self) -> Frame | None:
        return self._latest

    def wait_next(self, after_index: int, timeout: float) -> Frame | None:
        """The newest frame with an index above ``after_index``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                frame = self._latest
                if frame is not None and frame.index > after_index:
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set() or self._state == ENDED:
                    return None
                self._changed.wait(remaining)

    def stats(self) -> GrabberStats:
        with self._changed:
            times = list(self._times)
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            return GrabberStats(
                self.camera,
                self.name,
                self._state,
                self._error,
                self._frames,
                self._failures,
                times[-1] if times else None,
                fps,
            )

    def stalled(self, now: float | None = None) -> bool:
        """Whether frames should be flowing (state ok) but none came for max(5 s, ten frame periods).

        A read blocked in a driver cannot be interrupted from here; sources bound their own waits
        (read timeouts), and this tells a watchdog that frames stopped in the meantime.
        """
        if self._state != OK or not self._times:
            return False
        limit = max(STALL_S, 10.0 / self._source_fps) if self._source_fps else STALL_S
        return (time.monotonic() if now is None else now) - self._times[-1] > limit

    def hung(self, now: float) -> bool:
        """Whether a read has been blocked for more than HUNG_S (a camera that fails and is retried is not hung)."""
        return self.stalled(now) and bool(self._times) and now - self._times[-1] > HUNG_S

    def _run(self) -> None:
        delay = self.backoff
        while not self._stopping.is_set():
            source: CameraSource | None = None
            try:
                source = self._factory()
                source.start()
                self._source, self._source_fps = source, source.fps
                while not self._stopping.is_set():
                    image = source.read()
                    if image is None:
                        logger.info("camera %d (%s): the source ended", self.camera, self.name)
                        self._set_state(ENDED, None)
                        return
                    self._deliver(image)
                    if self._state != OK:
                        self._set_state(OK, None)
                        delay = self.backoff  # frames flow again
                return
            except CameraError as error:
                reason = str(error)
                logger.warning("camera %d (%s): %s; retrying in %g s", self.camera, self.name, reason, delay)
            except Exception as error:
                reason = f"unexpected {type(error).__name__}: {error}"
                logger.exception("camera %d (%s): %s; retrying in %g s", self.camera, self.name, reason, delay)
            finally:
                self._source = None
                if source is not None:
                    self._stop_source(source)
            if self._stopping.is_set():
                return  # a read cut short by shutdown is no failure of the camera
            with self._changed:
                self._failures += 1
            self._set_state(FAILED, reason)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.backoff_max)

    def _deliver(self, image: Image) -> None:
        now = time.monotonic()
        with self._changed:
            frame = Frame(self.camera, self._frames, now, image)
            self._frames += 1
            self._times.append(now)
            self._latest = frame
            self._changed.notify_all()
        for listener in self._listeners:
            try:
                listener(frame)
            except Exception:
                # A listener's bug must not stop the camera; log it once until it recovers.
                if id(listener) not in self._failing_listeners:
                    self._failing_listeners.add(id(listener))
                    logger.exception("camera %d (%s): a frame listener failed", self.camera, self.name)
            else:
                self._failing_listeners.discard(id(listener))

    def _stop_source(self, source: CameraSource) -> None:
        try:
            source.stop()
        except Exception:
            logger.exception("camera %d (%s): stopping the source failed", self.camera, self.name)

    def _set_state(self, state: str, error: str | None) -> None:
        with self._changed:
            changed = state != self._state
            self._state, self._error = state, error
            self._changed.notify_all()
        if changed and state == OK:
            logger.info("camera %d (%s): frames flowing", self.camera, self.name)
        if changed and self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception:
                logger.exception("camera %d (%s): the state listener failed", self.camera, self.name)
