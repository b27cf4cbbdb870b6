"""USB cameras (V4L2) and network streams (RTSP, HTTP), read with OpenCV.

A V4L2 camera is asked for the configured size and rate, in MJPG where it offers it (raw YUYV at
640x480 fills a USB 2 bus at a few frames per second), with a one-frame driver queue so a read
gives a fresh frame. Network streams go through FFmpeg with open and read timeouts, so a camera
that goes dark makes ``read`` raise instead of blocking the grabber forever.
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from appliance.cameras.source import CameraError, CameraSource
from appliance.cameras.uri import NETWORK
from appliance.inference.imaging import Image
from appliance.masking import mask_secrets

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0
# Rates outside this range are a container's or a driver's placeholder (0, or RTP's 90000 Hz clock).
_SANE_FPS = (0.5, 240.0)


def sane_fps(reported: float, fallback: float) -> float:
    return reported if _SANE_FPS[0] <= reported <= _SANE_FPS[1] else fallback


def open_ffmpeg(target: str, open_timeout: float, read_timeout: float) -> cv2.VideoCapture:
    """An FFmpeg capture of a file or URL; ``isOpened()`` says whether FFmpeg could open it."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        round(open_timeout * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        round(read_timeout * 1000),
    ]
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


class OpenCvSource(CameraSource):
    """``v4l2:/dev/videoN`` (or ``v4l2:N``), ``rtsp://``, ``rtsps://``, ``http://``, ``https://``."""

    _capture: cv2.VideoCapture | None = None
    _fps: float | None = None

    @property
    def name(self) -> str:
        """The URI as it may be logged: without its password."""
        return mask_secrets(self.uri.text)

    @property
    def fps(self) -> float:
        return self._fps if self._fps is not None else self.settings.fps

    def start(self) -> None:
        self.stop()
        capture = self._open_stream() if self.uri.scheme in NETWORK else self._open_v4l2()
        self._capture = capture
        self._fps = sane_fps(capture.get(cv2.CAP_PROP_FPS), self.settings.fps)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        logger.info("%s: open, %dx%d at %.3g fps", self.name, width, height, self._fps)

    def _open_stream(self) -> cv2.VideoCapture:
        if self.uri.scheme in ("rtsp", "rtsps"):
            # RTSP over TCP: lost UDP packets (Wi-Fi) smear frames. OpenCV reads this variable when a
            # capture opens; a value the user set in the environment wins.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        capture = open_ffmpeg(self.uri.text, OPEN_TIMEOUT_S, READ_TIMEOUT_S)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"{self.name}: cannot open the stream (unreachable, refused, or not video)")
        return capture

    def _open_v4l2(self) -> cv2.VideoCapture:
        target = self.uri.target
        capture = cv2.VideoCapture(int(target) if target.isdigit() else target, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"{self.name}: cannot open the camera (absent, busy, or not a video device)")
        # The driver keeps what it can of these; the frames' own size is what counts downstream.
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
        capture.set(cv2.CAP_PROP_FPS, self.settings.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def read(self) -> Image:
        """The next frame; a stream or camera that ends or stops answering is a failure, not an end."""
        if self._capture is None:
            raise CameraError(f"{self.name}: read before start")
        ok, image = self._capture.read()
        if not ok or image is None:
            raise CameraError(f"{self.name}: no frame (the camera stopped sending, or the stream ended)")
        return np.asarray(image, np.uint8)  # no copy: OpenCV decodes to 8-bit BGR

    def stop(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
