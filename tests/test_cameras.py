"""Cameras: every URI kind opens the right source, sources keep time, and grabbers survive failing cameras.

Real parts wherever they run here: H.264 files written with the appliance's own writer, the
synthetic world's renderer, a local HTTP server, OpenCV's V4L2 backend. picamera2 runs only on
Raspberry Pi OS, so its source is tested against a fake module with the real library's calls.
"""

from __future__ import annotations

import functools
import gc
import http.server
import itertools
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.cameras.grabber import ENDED, FAILED, HUNG_S, OK, Grabber
from appliance.cameras.opencv import OpenCvSource
from appliance.cameras.picamera2 import Picamera2Source, lores_size
from appliance.cameras.registry import SOURCES, open_source
from appliance.cameras.sim import SimSource
from appliance.cameras.source import CameraError, CameraSource, Frame, SourceSettings
from appliance.cameras.uri import SCHEMES, CameraUri
from appliance.inference.imaging import Image
from appliance.sim.render import Renderer
from appliance.sim.scenario import load_scenario
from appliance.video import Mp4Writer
from tests.camera_fakes import FakePicamera2, Run, Script, fake_picamera2_module, scene

SETTINGS = SourceSettings(160, 120, 10.0)
CLIP_FPS = 20.0


def level_of(image: Image) -> int:
    """Which frame of a test clip ``image`` is: frame i is flat grey 20 + 10 i."""
    return round((float(image.mean()) - 20) / 10)


def write_clip(path: Path, frames: int, fps: float = CLIP_FPS) -> Path:
    with Mp4Writer(path, fps, 160, 120) as writer:
        for i in range(frames):
            writer.write(np.full((120, 160, 3), 20 + 10 * i, np.uint8))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``ten.mp4`` (10 frames) and ``twenty.mp4`` (20 frames), both at 20 fps."""
    folder = tmp_path_factory.mktemp("clips")
    write_clip(folder / "ten.mp4", 10)
    write_clip(folder / "twenty.mp4", 20)
    return folder


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-second, two-camera scenario at 20 fps and 96x72, with one person walking."""
    data = {
        "description": "a short test world",
        "fps": 20,
        "duration": 1,
        "resolution": [96, 72],
        "caption_every": 0.5,
        "places": {"hall": {"kind": "corridor", "x": [-1.5, 1.5], "z": [0, 12]}},
        "cameras": [
            {"place": "hall", "at": [0, 0.2], "yaw": 0, "pitch": 15, "fov": 70},
            {"place": "hall", "at": [0, 11.8], "yaw": 180, "pitch": 15, "fov": 70},
        ],
        "people": [{"id": "p1", "shirt": "red", "script": [{"enter": [0, 3]}, {"walk": [[0, 8]]}]}],
    }
    path = tmp_path_factory.mktemp("scenario") / "hall.json"
    path.write_text(json.dumps(data))
    return path


def source(text: str, settings: SourceSettings = SETTINGS) -> CameraSource:
    return open_source(CameraUri.parse(text), settings)


def read_all(camera: CameraSource, limit: int = 1000) -> list[Image]:
    images: list[Image] = []
    while len(images) < limit and (image := camera.read()) is not None:
        images.append(image)
    return images


class States:
    """An on_state listener that records what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, float]] = []

    def __call__(self, state: str, error: str | None) -> None:
        self.seen.append((state, error, time.monotonic()))

    @property
    def states(self) -> list[str]:
        return [state for state, _, _ in self.seen]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- the registry ------------------------------------------------------------------------------


def test_every_uri_kind_has_a_source_that_opens_nothing_until_started() -> None:
    assert set(SOURCES) == set(SCHEMES)
    examples = {
        "picamera2": "picamera2:0",
        "v4l2": "v4l2:/dev/video99",
        "rtsp": "rtsp://user:pw@192.0.2.1/stream",
        "rtsps": "rtsps://192.0.2.1/stream",
        "http": "http://192.0.2.1/video.mjpg",
        "https": "https://192.0.2.1/video.mjpg",
        "file": "file:/nonexistent/clip.mp4",
        "sim": "sim:no-such-scenario",
    }
    assert set(examples) == set(SCHEMES)
    for scheme, text in examples.items():
        camera = source(text)
        assert type(camera) is SOURCES[scheme]
        camera.stop()  # safe before start


# --- files -------------------------------------------------------------------------------------


def test_a_file_plays_at_its_own_frame_rate_then_ends(clips: Path) -> None:
    camera = source(f"file:{clips / 'ten.mp4'}")
    camera.start()
    begin = time.monotonic()
    levels, times = [], []
    while (image := camera.read()) is not None:
        levels.append(level_of(image))
        times.append(time.monotonic() - begin)
    elapsed = time.monotonic() - begin
    camera.stop()
    assert camera.fps == CLIP_FPS  # its own rate, not the configured 10 fps
    assert levels == list(range(10))
    # frame i is due i / 20 s after the start; the end comes when frame 10 would have been due
    for i, at in enumerate(times):
        assert i / CLIP_FPS - 0.01 <= at <= i / CLIP_FPS + 0.08, f"frame {i} at {at:.3f} s"
    assert 0.5 - 0.01 <= elapsed <= 0.65


def test_a_slow_reader_gets_the_frame_due_now_and_never_slows_the_clock(clips: Path) -> None:
    camera = source(f"file:{clips / 'twenty.mp4'}")
    camera.start()
    begin = time.monotonic()
    seen: list[tuple[int, float]] = []
    while (image := camera.read()) is not None:
        seen.append((level_of(image), time.monotonic() - begin))
        time.sleep(0.12)  # a consumer slower than the file's 50 ms frames
    elapsed = time.monotonic() - begin
    camera.stop()
    levels = [level for level, _ in seen]
    assert levels == sorted(set(levels)), "frames come in order, each once"
    assert len(levels) < 12, "frames whose time passed are skipped, not queued"
    for level, at in seen:
        assert abs(level - math.floor(at * CLIP_FPS)) <= 1, f"frame {level} delivered at {at:.3f} s"
    assert elapsed < 1.0 + 0.25, "20 frames at 20 fps last a second, however slow the reader"


def test_a_file_plays_as_fast_as_it_decodes_with_realtime_0(clips: Path) -> None:
    camera = source(f"file:{clips / 'twenty.mp4'}?realtime=0")
    camera.start()
    begin = time.monotonic()
    levels = [level_of(image) for image in read_all(camera)]
    elapsed = time.monotonic() - begin
    assert levels == list(range(20))
    assert elapsed < 0.5  # a second of video
    assert camera.read() is None, "it stays ended"
    camera.stop()


def test_a_looping_file_starts_over(clips: Path) -> None:
    camera = source(f"file:{clips / 'ten.mp4'}?loop=1&realtime=0")
    camera.start()
    levels = [level_of(image) for image in read_all(camera, limit=25)]
    camera.stop()
    assert levels == [*range(10), *range(10), *range(5)]


def test_a_missing_or_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent.mp4"
    with pytest.raises(CameraError, match=f"{missing}: no such file"):
        source(f"file:{missing}").start()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    camera = source(f"file:{junk}")
    with pytest.raises(CameraError, match=f"{junk}: cannot read it as a video"):
        camera.start()
    camera.stop()


# --- the synthetic world -----------------------------------------------------------------------


def test_sim_gives_the_renderers_frames_and_truths_for_its_seed_and_view(scenario: Path) -> None:
    camera = source(f"sim:{scenario}?seed=3&view=1&realtime=0")
    assert isinstance(camera, SimSource)
    camera.start()
    images = read_all(camera)
    camera.stop()
    renderer = Renderer(load_scenario(str(scenario)), view=1, seed=3)
    expected = list(renderer)
    assert len(images) == len(expected) == 20
    assert camera.fps == 20
    for image, frame in zip(images, expected, strict=True):
        assert np.array_equal(image, frame.image)
    assert [d.truth for d in camera.deliveries()] == [f.truth for f in expected]
    assert any(f.truth.people for f in expected), "the test world shows someone"
    other_view = Renderer(load_scenario(str(scenario)), view=0, seed=3).frame(5).image
    assert not np.array_equal(images[5], other_view)


def test_sim_loops_when_asked(scenario: Path) -> None:
    camera = source(f"sim:{scenario}?realtime=0&loop=1")
    camera.start()
    images = read_all(camera, limit=23)
    camera.stop()
    renderer = Renderer(load_scenario(str(scenario)))
    assert len(images) == 23
    for i in (0, 19, 20, 22):
        assert np.array_equal(images[i], renderer.frame(i % 20).image)


def test_sim_keeps_the_scenarios_clock_and_says_when_each_frame_was_due(scenario: Path) -> None:
    camera = source(f"sim:{scenario}")  # realtime by default: 20 frames at 20 fps
    assert isinstance(camera, SimSource)
    camera.start()
    images = read_all(camera)
    camera.stop()
    assert camera.started is not None
    deliveries = camera.deliveries()
    assert len(images) == len(deliveries) == 20
    for delivered in deliveries:
        due = camera.started + delivered.truth.index / 20
        assert due <= delivered.time <= due + 0.05, f"frame {delivered.truth.index} late"
    achieved = (len(deliveries) - 1) / (deliveries[-1].time - deliveries[0].time)
    assert achieved == pytest.approx(20, rel=0.05)


def test_sim_with_a_wrong_view_or_scenario_is_an_error_naming_it(scenario: Path) -> None:
    with pytest.raises(CameraError, match=r"view=2.*2 camera\(s\); no view 2"):
        source(f"sim:{scenario}?view=2").start()
    with pytest.raises(CameraError, match="no-such-world: no such scenario"):
        source("sim:no-such-world").start()


def test_a_grabbed_sim_frame_finds_its_truth_by_its_time(scenario: Path) -> None:
    made: list[SimSource] = []

    def factory() -> CameraSource:
        camera = source(f"sim:{scenario}?realtime=0")
        assert isinstance(camera, SimSource)
        made.append(camera)
        return camera

    frames: list[Frame] = []
    grabber = Grabber(0, "cam0", factory, on_frame=[frames.append])
    grabber.start()
    wait_until(lambda: not grabber.alive)  # the scenario ended
    grabber.stop()
    renderer = Renderer(load_scenario(str(scenario)))
    assert len(frames) == 20
    for frame in frames:
        truth = made[0].truth_at(frame.time)
        assert truth is not None
        assert truth.index == frame.index
        assert np.array_equal(frame.image, renderer.frame(truth.index).image)


# --- network streams and USB cameras -----------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(clips: Path) -> Iterator[str]:
    """A local web server sharing the clips folder; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(clips)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_an_http_stream_gives_its_frames_and_its_end_is_a_failure(http_server: str) -> None:
    camera = source(f"{http_server}/ten.mp4")
    assert isinstance(camera, OpenCvSource)
    camera.start()
    levels = [level_of(camera.read()) for _ in range(10)]
    assert levels == list(range(10))
    assert camera.fps == CLIP_FPS
    # a network camera whose stream stops has failed (the grabber reopens it); it has not "ended"
    with pytest.raises(CameraError, match="no frame"):
        camera.read()
    camera.stop()


def test_an_unreachable_stream_is_an_error_that_hides_the_password(http_server: str) -> None:
    url = http_server.replace("//", "//viewer:s3cret@") + "/missing.mp4"
    with pytest.raises(CameraError, match=r"cannot open the stream") as error:
        source(url).start()
    assert "s3cret" not in str(error.value)
    assert "viewer:***@127.0.0.1" in str(error.value)


def test_an_absent_usb_camera_is_an_error_naming_the_device() -> None:
    with pytest.raises(CameraError, match="v4l2:/dev/video99: cannot open the camera"):
        source("v4l2:/dev/video99").start()


# --- picamera2 (fake module) -------------------------------------------------------------------


@pytest.fixture
def picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2_module())
    monkeypatch.setattr(FakePicamera2, "opened", [])
    return FakePicamera2


def test_picamera2_records_main_and_delivers_the_lores_stream_as_bgr(picamera2: type[FakePicamera2]) -> None:
    camera = source("picamera2:0", SourceSettings(640, 480, 30.0))
    assert isinstance(camera, Picamera2Source)
    camera.start()
    frames = [camera.read() for _ in range(3)]
    device = camera.camera
    assert isinstance(device, picamera2)
    config = device.camera_config
    assert config is not None
    assert config["main"]["size"] == (640, 480), "main stream at the configured size, for the H.264 encoder"
    assert config["encode"] == "main"
    assert config["lores"]["size"] == (320, 240)
    assert config["lores"]["format"] == "YUV420"
    assert config["controls"]["FrameDurationLimits"] == (33333, 33333)
    expected = cv2.resize(scene(), (320, 240), interpolation=cv2.INTER_AREA).astype(int)
    for frame in frames:
        assert frame.shape == (240, 320, 3)
        assert frame.dtype == np.uint8
        assert np.abs(frame.astype(int) - expected).mean() < 3, "BGR, not RGB or YUV"
    assert frames[0] is not frames[1], "each frame owns its image"
    camera.stop()
    assert camera.camera is None
    assert not device.is_open, "stopping releases the camera for the next start"


def test_picamera2_sizes_the_lores_stream_for_the_detector(picamera2: type[FakePicamera2]) -> None:
    camera = source("picamera2:0", SourceSettings(640, 480, 30.0, detect_size=(256, 256)))
    camera.start()
    frame = camera.read()
    config = picamera2.opened[0].camera_config
    camera.stop()
    assert config is not None
    assert config["main"]["size"] == (640, 480)
    assert config["lores"]["size"] == (256, 192)
    assert frame is not None
    assert frame.shape == (192, 256, 3)


def test_picamera2_cuts_the_padding_off_rows(picamera2: type[FakePicamera2]) -> None:
    camera = source("picamera2:0", SourceSettings(200, 150, 30.0))
    assert isinstance(camera, Picamera2Source)
    camera.start()
    assert lores_size(200, 150) == (200, 150)
    assert picamera2.opened[0].stream_configuration("lores")["stride"] == 256
    assert lores_size(1920, 1080) == (320, 180), "320 wide where the detector is not known"
    assert lores_size(640, 480, (256, 256)) == (256, 192), "fitted into the detector's input: no resize there"
    assert lores_size(1280, 720, (320, 320)) == (320, 180)
    assert lores_size(160, 120, (320, 320)) == (160, 120), "never larger than the main stream"
    assert lores_size(642, 482, (320, 320)) == (320, 240), "even, as YUV420 needs"
    frame = camera.read()
    camera.stop()
    assert frame.shape == (150, 200, 3)
    assert frame.flags.c_contiguous
    expected = cv2.resize(scene(), (200, 150), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(frame.astype(int) - expected).mean() < 3


@pytest.mark.usefixtures("picamera2")
def test_picamera2_absent_camera_or_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CameraError, match=r"picamera2:1: no camera 1: libcamera sees 1 camera"):
        source("picamera2:1").start()
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="picamera2:0: picamera2 is not installed") as error:
        source("picamera2:0").start()
    assert "apt install python3-picamera2" in str(error.value)
    assert "--system-site-packages" in str(error.value)


# --- grabbers ----------------------------------------------------------------------------------


def test_a_slow_consumer_gets_the_newest_frame_and_the_grabber_holds_no_backlog(clips: Path) -> None:
    frames_before = sum(isinstance(o, Frame) for o in gc.get_objects())
    grabber = Grabber(0, "cam0", lambda: source(f"file:{clips / 'ten.mp4'}?loop=1&realtime=0"))
    grabber.start()
    indices = []
    frame = grabber.wait_next(-1, timeout=5)
    assert frame is not None
    for _ in range(5):
        time.sleep(0.05)  # a detector much slower than the decoder
        frame = grabber.wait_next(frame.index, timeout=5)
        assert frame is not None
        assert frame.camera == 0
        indices.append(frame.index)
    frames_kept = sum(isinstance(o, Frame) for o in gc.get_objects()) - frames_before
    stats = grabber.stats()
    grabber.stop()
    assert not grabber.alive
    assert all(b - a > 1 for a, b in itertools.pairwise(indices)), f"skipped frames: {indices}"
    assert stats.frames > 50
    assert stats.fps > 50
    assert frames_kept <= 2, "only the newest frame is kept (and the consumer's own)"
    assert grabber.latest() is not None


def test_a_failing_camera_is_reopened_after_a_back_off() -> None:
    script = Script(Run(frames=3, then=CameraError("cable pulled")), Run())
    states = States()
    grabber = Grabber(1, "door", script, on_state=states, backoff=0.2)
    grabber.start()
    wait_until(lambda: states.states == [OK, FAILED, OK])
    frame = grabber.wait_next(5, timeout=5)
    assert grabber.source is script.sources[1], "the source now running, for the recorder to follow"
    grabber.stop()
    assert grabber.source is None
    assert frame is not None
    assert frame.camera == 1
    assert states.seen[1][1] == "cable pulled"
    assert len(script.sources) == 2
    assert script.sources[0].stopped.is_set(), "a failed source is stopped before it is reopened"
    assert script.made[1] - states.seen[1][2] >= 0.2 - 0.01
    stats = grabber.stats()
    assert stats.failures == 1
    assert stats.state == OK
    assert script.sources[1].stopped.is_set(), "stop stops the source"


def test_the_back_off_doubles_up_to_its_cap_and_starts_over_once_frames_flow() -> None:
    unplugged = Run(start_error=CameraError("camera unplugged"))
    script = Script(unplugged, unplugged, unplugged, unplugged, Run(frames=2, then=CameraError("gone")), Run())
    states = States()
    grabber = Grabber(0, "cam0", script, on_state=states, backoff=0.05, backoff_max=0.15)
    grabber.start()
    wait_until(lambda: len(script.sources) == 6 and states.states[-1] == OK)
    grabber.stop()
    gaps = [b - a for a, b in zip(script.made, script.made[1:], strict=False)]
    for gap, expected in zip(gaps, (0.05, 0.1, 0.15, 0.15), strict=False):
        assert expected - 0.01 <= gap <= expected + 0.1, f"gaps {gaps}"
    # source 4 gave frames, so its failure waits the base back-off again (plus its two frames)
    assert gaps[4] <= 0.05 + 2 / 100 + 0.1
    assert states.states == [FAILED, OK, FAILED, OK], "changes only"
    assert grabber.stats().failures == 5


def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(Run(frames=1, then=ZeroDivisionError("division by zero")), Run())
    states = States()
    grabber = Grabber(0, "cam0", script, on_state=states, backoff=0.05)
    with caplog.at_level(logging.WARNING, logger="appliance.cameras.grabber"):
        grabber.start()
        wait_until(lambda: states.states == [OK, FAILED, OK])
        grabber.stop()
    assert states.seen[1][1] == "unexpected ZeroDivisionError: division by zero"
    logged = [r for r in caplog.records if "ZeroDivisionError" in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None


def test_a_failing_frame_listener_does_not_stop_the_camera(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def broken(_frame: Frame) -> None:
        raise RuntimeError("encoder full")

    grabber = Grabber(0, "cam0", Script(Run()), on_frame=[broken])
    grabber.add_frame_listener(lambda frame: seen.append(frame.index))
    with caplog.at_level(logging.ERROR, logger="appliance.cameras.grabber"):
        grabber.start()
        wait_until(lambda: len(seen) >= 5)
        grabber.stop()
    assert seen[:5] == [0, 1, 2, 3, 4]
    assert grabber.stats().failures == 0
    assert len([r for r in caplog.records if "listener failed" in r.getMessage()]) == 1, "logged once"


def test_one_failing_camera_does_not_stop_the_other(clips: Path) -> None:
    bad_states, good_states = States(), States()
    bad = Grabber(0, "usb", lambda: source("v4l2:/dev/video99"), on_state=bad_states, backoff=0.05)
    good = Grabber(1, "file", lambda: source(f"file:{clips / 'twenty.mp4'}?loop=1"), on_state=good_states)
    bad.start()
    good.start()
    time.sleep(0.6)
    good_stats, bad_stats = good.stats(), bad.stats()
    bad.stop()
    good.stop()
    assert bad_states.states == [FAILED]
    assert "/dev/video99" in (bad_stats.error or "")
    assert bad_stats.failures >= 2
    assert good_states.states == [OK]
    assert good_stats.frames >= 10
    assert good_stats.fps == pytest.approx(CLIP_FPS, rel=0.15)
    assert not good.stalled()


def test_a_finite_file_ends_the_grabber(clips: Path) -> None:
    states = States()
    grabber = Grabber(0, "cam0", lambda: source(f"file:{clips / 'ten.mp4'}?realtime=0"), on_state=states)
    grabber.start()
    wait_until(lambda: not grabber.alive)
    assert states.states == [OK, ENDED]
    assert grabber.stats().frames == 10
    assert grabber.wait_next(9, timeout=5) is None, "no waiting for frames that will never come"
    latest = grabber.latest()
    assert latest is not None
    assert level_of(latest.image) == 9
    grabber.stop()


def test_a_grabber_with_frames_that_stopped_coming_is_stalled() -> None:
    grabber = Grabber(0, "cam0", Script(Run(frames=None), fps=20))
    grabber.start()
    frame = grabber.wait_next(-1, timeout=5)
    assert frame is not None
    assert not grabber.stalled()
    assert grabber.stalled(now=frame.time + 5.1 + 1)
    grabber.stop()


def test_a_read_blocked_past_every_timeout_is_a_hang_and_a_failing_camera_is_not() -> None:
    """What the service's watchdog asks: a camera that fails is retried (a restart would not mend it),
    a read that never returns is a hung thread (a restart may)."""
    release = threading.Event()
    blocked = Grabber(0, "cam0", Script(Run(frames=3, hang=release)))
    failing = Grabber(1, "cam1", Script(Run(start_error=CameraError("unplugged"))), backoff=0.05)
    blocked.start()
    failing.start()
    try:
        assert blocked.wait_next(1, timeout=5) is not None  # the third of its three frames
        wait_until(lambda: failing.state == FAILED)
        now = time.monotonic()
        assert blocked.stalled(now + 6.0)
        assert not blocked.hung(now + 6.0)  # a stall is reported; within the sources' own timeouts, not a hang
        assert blocked.hung(now + HUNG_S + 1.0)
        assert not failing.hung(now + HUNG_S + 1.0)
    finally:
        release.set()
        blocked.stop()
        failing.stop()
