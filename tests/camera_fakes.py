"""Test stand-ins for what cannot run here: picamera2 (Raspberry Pi OS only), and cameras that fail on cue.

The fake ``picamera2`` module implements only the calls the appliance makes, with the real
library's signatures, defaults and checks (picamera2 0.3.x, ``picamera2/picamera2.py``), and
delivers a lores stream laid out as libcamera lays it out: I420 as one plane of 1.5 x height rows
of ``stride`` bytes, rows padded to a multiple of 64 pixels.
"""

from __future__ import annotations

import threading
import time
import types
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from appliance.cameras.source import CameraSource, SourceSettings
from appliance.cameras.uri import CameraUri
from appliance.inference.imaging import Image

_EMPTY: dict[str, Any] = {}  # the real defaults are {} literals; never mutated here


def scene(width: int = 640, height: int = 480) -> Image:
    """A smooth colour gradient: it survives YUV 4:2:0 subsampling almost unchanged."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    image = np.stack([40 + 170 * x + 0 * y, 60 + 150 * y + 0 * x, 200 - 120 * x * y], axis=2)
    return np.clip(image, 0, 255).astype(np.uint8)


class FakePicamera2:
    """``picamera2.Picamera2`` for one attached camera (by default), seeing ``scene()``."""

    cameras: ClassVar[list[dict[str, Any]]] = [
        {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}
    ]
    opened: ClassVar[list[FakePicamera2]] = []

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [dict(camera) for camera in FakePicamera2.cameras]

    def __init__(
        self, camera_num: int = 0, verbose_console: int | None = None, tuning: Any = None, allocator: Any = None
    ) -> None:
        if camera_num >= len(self.cameras):
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_idx = camera_num
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.is_open = True
        self.captures = 0
        FakePicamera2.opened.append(self)

    def create_video_configuration(
        self,
        main: dict[str, Any] = _EMPTY,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = _EMPTY,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] = _EMPTY,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
    ) -> dict[str, Any]:
        # the real defaults: XBGR8888 main at 1280x720, lores YUV420 at the main size, 30 fps
        main = {"format": "XBGR8888", "size": (1280, 720)} | main
        lores = None if lores is None else {"format": "YUV420", "size": main["size"]} | lores
        return {
            "use_case": "video",
            "transform": transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main,
            "lores": lores,
            "raw": raw,
            "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)} | controls,
            "display": display,
            "encode": encode,
        }

    def configure(self, camera_config: Any = "preview") -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = dict(camera_config)
        for name in ("main", "lores"):
            stream = config[name]
            if stream is None:
                continue
            width, height = stream["size"]
            if width % 2 or height % 2:
                raise RuntimeError("width and height should be even")
            config[name] = dict(stream, stride=-(-width // 64) * 64 if stream["format"] == "YUV420" else width * 4)
        if config["lores"] is not None:
            (mw, mh), (lw, lh) = config["main"]["size"], config["lores"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if config["lores"]["format"] not in ("YUV420", "YVU420"):
                raise RuntimeError("lores stream must be YUV")
        self.camera_config = config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        assert self.camera_config is not None
        stream: dict[str, Any] = self.camera_config[name]
        return stream

    def start(self, config: Any = None, show_preview: Any = False) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_array(self, name: str = "main", wait: Any = None, signal_function: Any = None) -> Any:
        if not self.started:
            # the real job never completes: with a number as ``wait`` the future times out
            raise TimeoutError
        assert self.camera_config is not None
        assert name == "lores", "the fake delivers only the lores stream"
        stream = self.camera_config["lores"]
        frame_us = self.camera_config["controls"]["FrameDurationLimits"][0]
        time.sleep(frame_us / 1e6)
        width, height = stream["size"]
        padded = np.zeros((height, stream["stride"], 3), np.uint8)
        padded[:, :width] = cv2.resize(scene(), (width, height), interpolation=cv2.INTER_AREA)
        self.captures += 1
        return cv2.cvtColor(padded, cv2.COLOR_BGR2YUV_I420)  # (1.5 x height, stride), as make_array gives

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.stop()
        self.is_open = False


def fake_picamera2_module() -> types.ModuleType:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    return module


@dataclass(frozen=True)
class Run:
    """What one start of a ScriptedSource does."""

    start_error: BaseException | None = None  # raised by ``start``
    frames: int | None = None  # frames it gives (None: endless) ...
    then: BaseException | None = None  # ... before ``read`` raises this; None: before it ends
    hang: threading.Event | None = None  # ... or before ``read`` blocks until this is set (a driver that hangs)


class ScriptedSource(CameraSource):
    """A camera that does what its Run says; its frames are flat grey at 0, 10, 20 ... counted per start."""

    def __init__(self, uri: CameraUri, settings: SourceSettings, run: Run) -> None:
        super().__init__(uri, settings)
        self.run = run
        self.frames = 0
        self.stopped = threading.Event()

    def start(self) -> None:
        if self.run.start_error is not None:
            raise self.run.start_error

    def read(self) -> Image | None:
        time.sleep(1 / self.settings.fps)
        if self.run.frames is None or self.frames < self.run.frames:
            self.frames += 1
            return np.full((24, 32, 3), (self.frames - 1) * 10 % 250, np.uint8)
        if self.run.hang is not None:
            self.run.hang.wait()
        if self.run.then is not None:
            raise self.run.then
        return None

    def stop(self) -> None:
        self.stopped.set()


class Script:
    """A factory of ScriptedSources: start ``n`` does ``runs[n]`` (the last repeats); records when each was made."""

    def __init__(self, *runs: Run, fps: float = 100.0) -> None:
        self.runs = runs
        self.settings = SourceSettings(32, 24, fps)
        self.sources: list[ScriptedSource] = []
        self.made: list[float] = []

    def __call__(self) -> ScriptedSource:
        run = self.runs[min(len(self.sources), len(self.runs) - 1)]
        source = ScriptedSource(CameraUri.parse("sim:scripted"), self.settings, run)
        self.sources.append(source)
        self.made.append(time.monotonic())
        return source
