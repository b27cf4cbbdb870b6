"""``appliance capture``: save frames of a configured camera, to calibrate models on the real scene.

The toolchain quantizes a model on frames of ``--calib DIR``; frames of the scene the appliance
will watch (its light, its distance, its lens) give int8 ranges that fit what the model meets.
The camera is opened exactly as the service opens it (the slot's URI, the configured size and
frame rate), and one frame is kept every ``every`` seconds; the frames in between are read and
dropped, so a live camera's newest frame is the one saved.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2

from appliance.cameras.registry import open_source
from appliance.cameras.source import CameraSource, SourceSettings
from appliance.config import Config
from appliance.errors import ApplianceError, ConfigError

log = logging.getLogger(__name__)


def _source(config: Config, camera: int) -> CameraSource:
    uri = config.camera_0 if camera == 0 else config.camera_1
    if uri is None:
        raise ConfigError(
            f"APPLIANCE_CAMERA_{camera}: camera slot {camera} is empty; set APPLIANCE_CAMERA_{camera} "
            "to the camera's URI in the env file"
        )
    return open_source(uri, SourceSettings(config.camera_size[0], config.camera_size[1], config.camera_fps))


def _writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ApplianceError(f"{out}: cannot make the folder: {error.strerror or error}") from None


def run_capture(config: Config, camera: int, frames: int, out: Path, every: float) -> int:
    """Save ``frames`` frames of camera slot ``camera`` into ``out`` as PNG, ``every`` seconds apart.

    Returns the exit status: 0 when all were saved, 1 when the camera ended first (a file or a
    scenario shorter than asked; what was saved is kept and counted).
    """
    if frames < 1 or every < 0:
        raise ConfigError(f"--frames must be at least 1 and --every at least 0; got {frames} and {every}")
    source = _source(config, camera)
    _writable(out)
    source.start()
    saved = 0
    try:
        due = time.monotonic()
        while saved < frames:
            image = source.read()
            if image is None:
                break
            if time.monotonic() < due:
                continue
            path = out / f"camera{camera}_{saved:05d}.png"
            if not cv2.imwrite(str(path), image):
                raise ApplianceError(f"{path}: cannot write the frame")
            saved += 1
            due = time.monotonic() + every
            log.info("saved %s (%d of %d)", path, saved, frames)
    finally:
        source.stop()
    print(f"saved {saved} frames of camera {camera} ({source.uri.text}) in {out}")
    if saved < frames:
        print(f"camera {camera} ended after {saved} of {frames} frames")
        return 1
    return 0
