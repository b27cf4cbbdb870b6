"""Raspberry Pi CSI cameras through picamera2 (libcamera): ``picamera2:N``.

The camera runs a video configuration with two streams: ``main`` at the configured size, which
the recording stage feeds to the hardware H.264 encoder through :attr:`Picamera2Source.camera`,
and a small ``lores`` YUV420 stream that ``read`` converts to BGR for detection. The ISP scales
the lores stream to fit the detector's input, so the letterbox only pads it. picamera2 is
imported only when a camera starts, so the appliance runs on machines without it; on Raspberry Pi
OS it comes from apt, not from PyPI.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import cv2
import numpy as np

from appliance.cameras.source import CameraError, CameraSource
from appliance.inference.imaging import Image, Letterbox

logger = logging.getLogger(__name__)

# Where the detector's input size is not known: the usual 320 of a YOLO export.
LORES_WIDTH = 320
NOT_INSTALLED = (
    "picamera2 is not installed: on Raspberry Pi OS, apt install python3-picamera2 "
    "and create the venv with --system-site-packages"
)


def lores_size(width: int, height: int, detect_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The detection stream's size: the main stream's shape fitted into the detector's input (or
    ``LORES_WIDTH`` wide), never larger than the main stream, in even numbers (YUV420 halves them)."""
    fit_width, fit_height = detect_size or (LORES_WIDTH, height)
    fitted = Letterbox.fit(width, height, min(width, fit_width), min(height, fit_height))
    return max(2, fitted.width // 2 * 2), max(2, fitted.height // 2 * 2)


class Picamera2Source(CameraSource):
    """A CSI camera: ``read`` gives the lores stream as BGR; ``camera`` is the Picamera2 object."""

    camera: Any = None  # picamera2.Picamera2 while started (untyped: the library has no stubs)
    lores: tuple[int, int] | None = None  # the detection stream's (width, height), as the camera configured it

    @property
    def timeout(self) -> float:
        """Seconds ``read`` waits for a frame before the camera counts as failed."""
        return max(5.0, 10.0 / self.settings.fps)

    def start(self) -> None:
        self.stop()
        try:
            module = importlib.import_module("picamera2")
        except ImportError as error:
            raise CameraError(f"{self.uri.text}: {NOT_INSTALLED} ({error})") from None
        number = int(self.uri.target)
        try:
            attached = len(module.Picamera2.global_camera_info())
        except Exception as error:  # libcamera reports its failures as plain RuntimeErrors
            raise CameraError(f"{self.uri.text}: cannot list the cameras: {error}") from None
        if number >= attached:
            raise CameraError(
                f"{self.uri.text}: no camera {number}: libcamera sees {attached} camera(s); "
                "check the ribbon cable and `rpicam-hello --list-cameras`"
            )
        try:
            self.camera = module.Picamera2(number)
            self.lores = self._configure()
            self.camera.start()
        except Exception as error:
            self.stop()
            raise CameraError(f"{self.uri.text}: cannot start the camera: {error}") from None
        main = f"{self.settings.width}x{self.settings.height}"
        logger.info("%s: main %s, lores %dx%d at %g fps", self.uri.text, main, *self.lores, self.settings.fps)

    def _configure(self) -> tuple[int, int]:
        """Configure the streams; returns the lores stream's (width, height)."""
        settings = self.settings
        frame_us = round(1_000_000 / settings.fps)
        config = self.camera.create_video_configuration(
            main={"size": (settings.width, settings.height)},
            lores={"size": lores_size(settings.width, settings.height, settings.detect_size), "format": "YUV420"},
            # equal limits fix the frame rate: the sensor neither slows in the dark nor speeds up
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        self.camera.configure(config)
        # libcamera may adjust sizes; the stream configuration holds what it chose.
        width, height = self.camera.stream_configuration("lores")["size"]
        return int(width), int(height)

    def read(self) -> Image:
        if self.camera is None or self.lores is None:
            raise CameraError(f"{self.uri.text}: read before start")
        try:
            # A number as ``wait`` is a timeout (picamera2 0.3.17 and later): a camera that stops
            # answering raises TimeoutError instead of blocking the grabber forever.
            yuv = self.camera.capture_array("lores", wait=self.timeout)
        except TimeoutError:
            raise CameraError(f"{self.uri.text}: no frame for {self.timeout:g} s") from None
        except Exception as error:
            raise CameraError(f"{self.uri.text}: capture failed: {error}") from None
        # picamera2 gives I420 as one plane of 1.5 x height rows, each ``stride`` bytes wide (rows may
        # be padded): converting it whole keeps the padding as extra columns, cut off afterwards.
        # Each frame gets its own image: frames are shared with the detector and the recorder.
        bgr = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
        width = self.lores[0]
        return bgr if bgr.shape[1] == width else np.ascontiguousarray(bgr[:, :width])

    def stop(self) -> None:
        camera, self.camera = self.camera, None
        if camera is None:
            return
        try:
            camera.close()  # stops the camera first, and releases it for the next start
        except Exception:
            logger.exception("%s: closing the camera failed", self.uri.text)
