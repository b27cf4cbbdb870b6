"""Which source class opens each kind of camera URI."""

from __future__ import annotations

from appliance.cameras.file import FileSource
from appliance.cameras.opencv import OpenCvSource
from appliance.cameras.picamera2 import Picamera2Source
from appliance.cameras.sim import SimSource
from appliance.cameras.source import CameraSource, SourceSettings
from appliance.cameras.uri import CameraUri

SOURCES: dict[str, type[CameraSource]] = {
    "picamera2": Picamera2Source,
    "v4l2": OpenCvSource,
    "rtsp": OpenCvSource,
    "rtsps": OpenCvSource,
    "http": OpenCvSource,
    "https": OpenCvSource,
    "file": FileSource,
    "sim": SimSource,
}


def open_source(uri: CameraUri, settings: SourceSettings) -> CameraSource:
    """The source for ``uri``, made but not started: nothing is opened until ``start``."""
    return SOURCES[uri.scheme](uri, settings)
