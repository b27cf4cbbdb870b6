"""Video files as cameras: ``file:PATH[?loop=1&realtime=0]``.

A file plays at its own frame rate by default, as a camera would deliver it, or as fast as it
decodes with ``realtime=0``; once by default (``read`` returns None at its end), or over and over
with ``loop=1``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np

from appliance.cameras.opencv import OPEN_TIMEOUT_S, READ_TIMEOUT_S, open_ffmpeg, sane_fps
from appliance.cameras.source import CameraError, CameraSource, SourceSettings
from appliance.cameras.uri import CameraUri
from appliance.inference.imaging import Image

logger = logging.getLogger(__name__)


class Pacer:
    """The clock of a recorded source: frame ``k`` is due ``k / fps`` seconds after ``started``.

    With ``realtime`` off every frame is delivered as soon as it is asked for. With it on, a reader
    that asks early waits for the next frame's time, and one that asks late gets the frame due now:
    the frames whose time passed meanwhile are skipped, as a live camera drops them, so a slow
    consumer neither slows the clock nor builds a backlog.
    """

    def __init__(self, fps: float, realtime: bool) -> None:
        self.fps, self.realtime = fps, realtime
        self.started = time.monotonic()  # when frame 0 was due

    def next_index(self, last: int) -> int:
        """The index of the frame to deliver after frame ``last`` (-1 before the first), waiting for its time."""
        wanted = last + 1
        if not self.realtime:
            return wanted
        now = time.monotonic()
        due = math.floor((now - self.started) * self.fps)  # the newest frame whose time has come
        if due > wanted:
            return due
        delay = self.started + wanted / self.fps - now
        if delay > 0:
            time.sleep(delay)
        return wanted


class FileSource(CameraSource):
    """A video file (any container and codec FFmpeg reads) played as a camera."""

    def __init__(self, uri: CameraUri, settings: SourceSettings) -> None:
        super().__init__(uri, settings)
        self.path = Path(uri.target).expanduser()
        self.loop = bool(uri.option("loop", 0))
        self.realtime = bool(uri.option("realtime", 1))
        self._capture: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._fps: float | None = None
        self._index = -1  # on the source's timeline, which keeps counting across loops
        self._position = 0  # frames decoded since the file was (re)opened

    @property
    def fps(self) -> float:
        return self._fps if self._fps is not None else self.settings.fps

    def start(self) -> None:
        self.stop()
        if not self.path.is_file():
            raise CameraError(f"file:{self.path}: no such file")
        capture = self._open()
        reported = capture.get(cv2.CAP_PROP_FPS)
        self._fps = sane_fps(reported, self.settings.fps)
        if self._fps != reported:
            logger.warning("file:%s: frame rate %r unknown; playing at %g fps", self.path, reported, self._fps)
        self._capture = capture
        self._pacer = Pacer(self._fps, self.realtime)
        self._index, self._position = -1, 0

    def _open(self) -> cv2.VideoCapture:
        capture = open_ffmpeg(str(self.path), OPEN_TIMEOUT_S, READ_TIMEOUT_S)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"file:{self.path}: cannot read it as a video")
        return capture

    def read(self) -> Image | None:
        if self._capture is None or self._pacer is None:
            raise CameraError(f"file:{self.path}: read before start")
        target = self._pacer.next_index(self._index)
        # A file decodes in order: frames whose time has passed are decoded and dropped.
        for _ in range(target - self._index):
            if not self._grab():
                return None
        ok, image = self._capture.retrieve()
        if not ok or image is None:
            raise CameraError(f"file:{self.path}: cannot decode frame {self._position - 1}")
        self._index = target
        return np.asarray(image, np.uint8)  # no copy: OpenCV decodes to 8-bit BGR

    def _grab(self) -> bool:
        """Move to the next frame of the file, back to its first when looping; False at its end."""
        assert self._capture is not None
        if self._capture.grab():
            self._position += 1
            return True
        if not self.loop:
            return False
        if self._position == 0:
            raise CameraError(f"file:{self.path}: no frame could be decoded")
        # Reopening rewinds every container; seeking to 0 is not reliable in all of them.
        self._capture.release()
        self._capture = self._open()
        self._position = 0
        return self._grab()

    def stop(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
