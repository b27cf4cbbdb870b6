"""Recording: clips that start with their pre-roll, whole under their final name or absent, kept within a quota.

Real parts throughout: frames are encoded with libx264, clips written to disk and decoded back
with PyAV. Each frame shows its own index as a row of black and white blocks, so a decoded clip
tells which frames it holds. picamera2 cannot run here: its recorder is driven through a small
stand-in of picamera2's encoder and outputs, written after the real ones (0.3.38).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from appliance.cameras.source import Frame
from appliance.inference.imaging import Image
from appliance.recording.clips import ClipStore, RecordingError
from appliance.recording.picamera2 import PiCamera2Recorder
from appliance.recording.recorder import Recorder
from appliance.recording.software import SoftwareRecorder
from appliance.video import H264Encoder

ROOT = Path(__file__).resolve().parents[1]
FPS = 10.0
SIZE = (160, 120)  # width, height
BITS = 10  # frame indices up to 1023


def picture(index: int, size: tuple[int, int] = SIZE, noise: np.random.Generator | None = None) -> Image:
    """A frame showing ``index`` as BITS blocks along its top (white: 1), grey or noise below."""
    width, height = size
    if noise is None:
        image = np.full((height, width, 3), 128, np.uint8)
    else:
        image = noise.integers(0, 256, (height, width, 3), dtype=np.uint8)
    block = width // BITS
    for bit in range(BITS):
        image[: height * 2 // 5, bit * block : (bit + 1) * block] = 255 if index >> bit & 1 else 0
    return image


def index_of(image: Image) -> int:
    height, width = image.shape[:2]
    block = width // BITS
    return sum(
        1 << bit
        for bit in range(BITS)
        if image[height // 10 : height * 3 // 10, bit * block + block // 4 : (bit + 1) * block - block // 4].mean()
        > 128
    )


def frame(
    index: int,
    at: float | None = None,
    size: tuple[int, int] = SIZE,
    noise: np.random.Generator | None = None,
) -> Frame:
    """Frame ``index`` of a steady FPS camera, or grabbed ``at`` a given time."""
    return Frame(0, index, 1000.0 + index / FPS if at is None else at, picture(index, size, noise))


def feed(recorder: Recorder, indices: Iterable[int], **kwargs: Any) -> None:
    for index in indices:
        recorder.feed(frame(index, **kwargs))


@dataclass(frozen=True)
class Clip:
    codec: str
    pix_fmt: str
    size: tuple[int, int]
    duration: float  # seconds, as the file states it
    indices: list[int]
    times: list[float]  # when each frame is shown, from the clip's start


def decode(path: Path) -> Clip:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.duration is not None
        assert stream.time_base is not None
        return Clip(
            stream.codec_context.name,
            str(stream.codec_context.pix_fmt),
            (stream.codec_context.width, stream.codec_context.height),
            float(stream.duration * stream.time_base),
            [index_of(f.to_ndarray(format="bgr24").astype(np.uint8)) for f in frames],
            [float(f.time or 0.0) for f in frames],
        )


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def recorder() -> Iterator[SoftwareRecorder]:
    recorder = SoftwareRecorder(preroll=2.0)
    recorder.start()
    yield recorder
    recorder.stop()


# -- the software recorder ----------------------------------------------------------------------


def test_a_clip_starts_with_the_preroll_and_holds_every_frame_up_to_end(
    recorder: SoftwareRecorder, tmp_path: Path
) -> None:
    path = tmp_path / "cam0" / "2024-05-01" / "120000_e1.mp4"
    feed(recorder, range(50))
    recorder.begin(path)  # at frame 49: two seconds of pre-roll reach back to frame 29
    feed(recorder, range(50, 65))
    assert files(tmp_path) == ["cam0/2024-05-01/120000_e1.mp4.part"]  # while recording: only the part name
    feed(recorder, range(65, 80))
    assert recorder.end() == path
    assert files(tmp_path) == ["cam0/2024-05-01/120000_e1.mp4"]  # after: only the final name

    clip = decode(path)
    assert (clip.codec, clip.pix_fmt, clip.size) == ("h264", "yuv420p", SIZE)
    first = clip.indices[0]
    assert 29 - FPS <= first <= 29  # the latest keyframe at or before the pre-roll's start: within one GOP
    assert clip.indices == list(range(first, 80))  # and every frame after it, up to end
    assert clip.times == pytest.approx([(i - first) / FPS for i in clip.indices], abs=1e-3)
    assert clip.duration == pytest.approx((80 - first) / FPS, abs=1e-3)


def test_a_clip_plays_at_real_speed_when_the_frame_rate_varies(recorder: SoftwareRecorder, tmp_path: Path) -> None:
    gaps = np.random.default_rng(1).uniform(0.03, 0.4, 40)
    times = 50.0 + np.cumsum(gaps)
    recorder.begin(tmp_path / "vfr.mp4")  # before any frame: the clip starts with the first
    for index, at in enumerate(times):
        recorder.feed(frame(index, at=float(at)))
    path = recorder.end()
    assert path is not None
    clip = decode(path)
    assert clip.indices == list(range(40))
    assert clip.times == pytest.approx(list(times - times[0]), abs=2e-3)


def test_the_preroll_ring_is_bounded_to_preroll_plus_one_gop() -> None:
    recorder = SoftwareRecorder(preroll=3.0)
    recorder.start()
    noise = np.random.default_rng(2)  # noise: every packet is large, as a busy scene's are
    spans, sizes = [], []
    for index in range(300):
        recorder.feed(frame(index, noise=noise))
        if index >= 60:
            spans.append(recorder.ring_seconds)
            sizes.append(recorder.ring_bytes)
    # After 6 s, the ring always reaches back at least the pre-roll, and never more than one GOP (1 s) further.
    assert min(spans) >= 3.0 - 1e-6
    assert max(spans) <= 4.0 + 1e-6
    assert max(sizes) <= 1.5 * sizes[0]  # 30 s of video later it holds no more than at 6 s: packets are dropped
    recorder.stop()
    assert recorder.ring_bytes == 0


def test_a_new_frame_size_restarts_the_encoder_and_a_clip_keeps_its_size(
    recorder: SoftwareRecorder, tmp_path: Path
) -> None:
    feed(recorder, range(20))
    feed(recorder, range(20, 40), size=(320, 240))  # the camera reopened at another size
    recorder.begin(tmp_path / "a.mp4")
    feed(recorder, range(40, 50), size=(320, 240))
    path = recorder.end()
    assert path is not None
    clip = decode(path)
    assert clip.size == (320, 240)
    assert clip.indices == list(range(clip.indices[0], 50))
    assert clip.indices[0] >= 20  # the old size's packets went with the old encoder

    recorder.begin(tmp_path / "b.mp4")
    feed(recorder, range(50, 60), size=(320, 240))
    feed(recorder, range(60, 70), size=(161, 121))  # reopened smaller (odd sizes too) during the clip
    path = recorder.end()
    assert path is not None
    clip = decode(path)
    assert clip.size == (320, 240)  # scaled to the clip's size until it ends
    assert clip.indices == list(range(clip.indices[0], 70))


def test_end_without_a_clip_is_none_and_a_second_begin_is_refused(recorder: SoftwareRecorder, tmp_path: Path) -> None:
    assert recorder.end() is None
    feed(recorder, range(5))
    recorder.begin(tmp_path / "one.mp4")
    with pytest.raises(RuntimeError, match="already"):
        recorder.begin(tmp_path / "two.mp4")
    assert recorder.end() == tmp_path / "one.mp4"
    recorder.begin(tmp_path / "at-once.mp4")
    assert recorder.end() == tmp_path / "at-once.mp4"  # ended at once, it still holds the pre-roll
    assert decode(tmp_path / "at-once.mp4").indices == [0, 1, 2, 3, 4]


def test_stop_finishes_the_open_clip_and_ignores_later_frames(tmp_path: Path) -> None:
    recorder = SoftwareRecorder(preroll=1.0)
    recorder.start()
    recorder.begin(tmp_path / "clip.mp4")
    feed(recorder, range(20))
    recorder.stop()
    feed(recorder, range(20, 30))
    assert files(tmp_path) == ["clip.mp4"]
    assert decode(tmp_path / "clip.mp4").indices == list(range(20))
    assert recorder.end() is None


def test_a_clip_with_no_frames_at_all_leaves_nothing(recorder: SoftwareRecorder, tmp_path: Path) -> None:
    recorder.begin(tmp_path / "empty.mp4")
    assert recorder.end() is None
    assert files(tmp_path) == []


def test_a_clip_whose_folder_vanishes_is_dropped_and_the_next_clip_is_whole(
    recorder: SoftwareRecorder, tmp_path: Path
) -> None:
    feed(recorder, range(30))
    recorder.begin(tmp_path / "gone" / "clip.mp4")
    feed(recorder, range(30, 40))
    shutil.rmtree(tmp_path / "gone")  # a card pulled, a folder deleted by hand
    feed(recorder, range(40, 50))
    assert recorder.end() is None
    assert files(tmp_path) == []

    recorder.begin(tmp_path / "next" / "clip.mp4")
    feed(recorder, range(50, 60))
    path = recorder.end()
    assert path == tmp_path / "next" / "clip.mp4"
    clip = decode(path)
    assert clip.indices == list(range(clip.indices[0], 60))
    assert 29 - FPS <= clip.indices[0] <= 29  # begun at frame 49: the pre-roll was kept through the failure


WRITE_FAILURE = """
import json, resource, signal, sys
from pathlib import Path
import numpy as np
from appliance.cameras.source import Frame
from tests.test_recording import FakePicamera2, fake_picamera2_modules, picture

folder, limit, kind = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
noise = np.random.default_rng(3)  # noise: large packets, as a busy scene's
if kind == "software":
    from appliance.recording.software import SoftwareRecorder

    recorder = SoftwareRecorder(preroll=1.0)
    capture = lambda i: None
else:
    sys.modules.update({module.__name__: module for module in fake_picamera2_modules()})
    from appliance.recording.picamera2 import PiCamera2Recorder

    camera = FakePicamera2(noise=noise)
    recorder = PiCamera2Recorder(lambda: camera, preroll=1.0, fps=10)
    capture = camera.capture
recorder.start()

def feed(indices):
    for i in indices:
        capture(i)
        recorder.feed(Frame(0, i, 1000 + i / 10, picture(i, noise=noise)))

feed(range(20))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit or hard, hard))
recorder.begin(folder / "big.mp4")
feed(range(20, 120))
first = recorder.end()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
recorder.begin(folder / "next.mp4")
feed(range(120, 130))
second = recorder.end()
print(json.dumps([str(first) if first else None, str(second) if second else None]))
"""


def record_with_a_file_size_limit(folder: Path, kind: str, limit: int) -> tuple[str | None, str | None, str]:
    """A ten-second clip written under ``limit`` bytes a file (0: none), then a short one without: (paths, log)."""
    done = subprocess.run(
        [sys.executable, "-c", WRITE_FAILURE, str(folder), str(limit), kind],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    return first, second, done.stderr


@pytest.mark.parametrize("kind", ["software", "picamera2"])
@pytest.mark.parametrize("when", ["writing frames", "writing the index"])
def test_a_write_error_loses_only_that_clip(tmp_path: Path, kind: str, when: str) -> None:
    """A file-size limit stands in for a full disk: write(2) fails alike (EFBIG for ENOSPC), as root too."""
    if when == "writing frames":
        limit = 60_000  # far below the clip: fails at one of the flushes while frames are muxed
    else:
        whole, _, _ = record_with_a_file_size_limit(tmp_path / "measure", kind, 0)
        assert whole is not None
        limit = Path(whole).stat().st_size - 300  # the same frames fit, the index (written last) does not
    first, second, log = record_with_a_file_size_limit(tmp_path / "clips", kind, limit)
    assert first is None
    assert "dropped" in log
    if when == "writing frames":
        assert "File too large" in log
    else:  # closing a fragmented MP4 swallows the error (so does picamera2's PyavOutput): the file tells it
        assert "could not be written whole (was the disk full?)" in log
    assert second == str(tmp_path / "clips" / "next.mp4")
    assert files(tmp_path / "clips") == ["next.mp4"]  # no part left behind, no final name for the failed clip
    assert decode(tmp_path / "clips" / "next.mp4").indices[-1] == 129


CRASH = """
import os, signal, sys
from pathlib import Path
from appliance.cameras.source import Frame
from appliance.recording.software import SoftwareRecorder
import numpy as np

recorder = SoftwareRecorder(preroll=1.0)
recorder.start()
recorder.begin(Path(sys.argv[1]))
for i in range(30):
    recorder.feed(Frame(0, i, i / 10, np.full((120, 160, 3), i, np.uint8)))
os.kill(os.getpid(), signal.SIGKILL)  # a crash or a power cut in the middle of the clip
"""


def test_a_crash_leaves_a_part_file_which_the_clip_store_makes_whole_at_start(tmp_path: Path) -> None:
    """The incident where someone pulls the plug is the one to keep: the part (fragmented MP4) plays up to
    its last fragment, and at the next start it becomes a whole clip under its name, marked interrupted."""
    clips = tmp_path / "clips"
    path = clips / "cam0" / "2024-05-01" / "120000_e1.mp4"
    done = subprocess.run([sys.executable, "-c", CRASH, str(path)], cwd=ROOT, capture_output=True, check=False)
    assert done.returncode == -9
    assert files(clips) == ["cam0/2024-05-01/120000_e1.mp4.part"]  # never a final name on an unfinished clip

    assert ClipStore(clips, max_bytes=10**9, max_age_seconds=0).salvage_leftovers() == []  # done when it opened
    assert files(clips) == ["cam0/2024-05-01/120000_e1.mp4"]
    with av.open(str(path)) as container:
        assert container.metadata.get("comment", "").startswith("interrupted")
        shown = [f.to_ndarray(format="gray")[0, 0] for f in container.decode(container.streams.video[0])]
    # keyframes each second (frames 0, 10, 20): the fragments up to frame 19 were on the disk, 20-29 not yet
    assert len(shown) == 20
    assert shown[-1] == pytest.approx(19, abs=3)


def test_begin_and_end_come_from_another_thread_while_frames_are_fed(tmp_path: Path) -> None:
    recorder = SoftwareRecorder(preroll=1.0)
    recorder.start()
    fed = [-1]

    def grabber() -> None:
        for index in range(200):
            recorder.feed(frame(index))
            fed[0] = index
            time.sleep(0.002)

    def wait_for(index: int) -> None:
        deadline = time.monotonic() + 30
        while fed[0] < index:
            assert time.monotonic() < deadline
            time.sleep(0.001)

    thread = threading.Thread(target=grabber)
    thread.start()
    paths = []
    for number, (start, stop) in enumerate([(30, 70), (90, 120), (150, 190)]):
        wait_for(start)
        recorder.begin(tmp_path / f"{number}.mp4")
        wait_for(stop)
        paths.append(recorder.end())
    thread.join()
    recorder.stop()
    for path, (start, stop) in zip(paths, [(30, 70), (90, 120), (150, 190)], strict=True):
        assert path is not None
        indices = decode(path).indices
        assert indices == list(range(indices[0], indices[-1] + 1))  # none lost or repeated at the hand-overs
        assert start - 2 * FPS <= indices[0] <= start
        assert indices[-1] >= stop


# -- the clips folder ---------------------------------------------------------------------------


def make_clip(path: Path, size: int, age_days: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    return path


def test_clip_paths_are_camera_local_day_and_time_then_event(tmp_path: Path) -> None:
    store = ClipStore(tmp_path / "clips", max_bytes=10**9, max_age_seconds=0)
    wall = time.mktime((2024, 5, 1, 23, 59, 58, 0, 0, -1))  # local time
    assert store.path_for("cam0", "cam0-20240501-235958-ab12", wall) == (
        tmp_path / "clips" / "cam0" / "2024-05-01" / "235958_cam0-20240501-235958-ab12.mp4"
    )
    for camera, event in [("cam0", "../up"), ("a/b", "e1"), ("", "e1")]:
        with pytest.raises(ValueError, match="cannot be part of a clip's path"):
            store.path_for(camera, event, wall)


def test_retention_deletes_the_oldest_clips_until_the_quota_holds_and_spares_clips_being_written(
    tmp_path: Path,
) -> None:
    now = time.time()
    store = ClipStore(tmp_path, max_bytes=5000, max_age_seconds=0)
    oldest = make_clip(tmp_path / "cam0" / "2024-04-29" / "100000_a.mp4", 1000, 5, now)
    older = make_clip(tmp_path / "cam1" / "2024-04-30" / "100000_b.mp4", 1000, 4, now)
    old = make_clip(tmp_path / "cam0" / "2024-04-30" / "110000_c.mp4", 1000, 3, now)
    make_clip(tmp_path / "cam0" / "2024-05-01" / "100000_d.mp4", 1000, 2, now)
    make_clip(tmp_path / "cam1" / "2024-05-01" / "100000_e.mp4", 1000, 1, now)
    writing = make_clip(tmp_path / "cam0" / "2024-04-29" / "120000_f.mp4.part", 3000, 6, now)  # the oldest file

    # 8000 bytes with the clip being written: the three oldest finished clips go.
    assert store.enforce(now) == [oldest, older, old]
    assert writing.exists()
    assert not (tmp_path / "cam1" / "2024-04-30").exists()  # day folders left empty are removed
    assert (tmp_path / "cam0" / "2024-04-29").exists()  # (not one holding a clip being written)
    assert store.enforce(now) == []  # within quota: nothing more
    assert store.free_bytes() > 0


def test_retention_deletes_clips_older_than_the_age_limit(tmp_path: Path) -> None:
    now = time.time()
    store = ClipStore(tmp_path, max_bytes=10**9, max_age_seconds=2 * 86400)
    five = make_clip(tmp_path / "cam0" / "2024-04-26" / "100000_a.mp4", 10, 5, now)
    three = make_clip(tmp_path / "cam0" / "2024-04-28" / "100000_b.mp4", 10, 3, now)
    one = make_clip(tmp_path / "cam0" / "2024-04-30" / "100000_c.mp4", 10, 1, now)
    writing = make_clip(tmp_path / "cam0" / "2024-04-26" / "110000_d.mp4.part", 10, 4, now)
    assert store.enforce(now) == [five, three]
    assert one.exists()
    assert writing.exists()
    assert ClipStore(tmp_path, max_bytes=10**9, max_age_seconds=0).enforce(now + 100 * 86400) == []  # 0: no limit


def test_the_clip_store_removes_leftover_part_files_when_it_opens(tmp_path: Path) -> None:
    now = time.time()
    kept = make_clip(tmp_path / "cam0" / "2024-05-01" / "100000_a.mp4", 10, 1, now)
    left = make_clip(tmp_path / "cam0" / "2024-05-01" / "110000_b.mp4.part", 10, 1, now)
    store = ClipStore(tmp_path, max_bytes=10**9, max_age_seconds=0)
    assert kept.exists()
    assert not left.exists()
    assert store.salvage_leftovers() == []


def test_an_unusable_clips_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RecordingError, match="cannot create the clips folder"):
        ClipStore(tmp_path / "file" / "clips", max_bytes=10**9, max_age_seconds=0)


# -- the picamera2 recorder, on a stand-in of picamera2 -----------------------------------------


class FakeOutput:
    """picamera2.outputs.Output."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False


class FakeCircularOutput2(FakeOutput):
    """picamera2.outputs.CircularOutput2 (0.3.38): a delay line of ``buffer_duration_ms``.

    A frame reaches the open output once it is older than the buffer, from the first keyframe on,
    with timestamps from that keyframe; ``stop`` flushes the rest into it and closes it.
    """

    def __init__(self, pts: Any = None, buffer_duration_ms: int = 5000) -> None:
        super().__init__(pts)
        self.buffer_duration_ms = buffer_duration_ms
        self._circular: list[tuple[bytes, bool, int]] = []
        self._output: FakePyavOutput | None = None
        self._streams: list[tuple[str, str, dict[str, Any]]] = []
        self._first_frame, self._time_offset = True, 0

    def open_output(self, output: FakePyavOutput) -> None:
        if self._output:
            raise RuntimeError("Underlying output must be closed first")
        output.start()
        for encoder_stream, codec, kwargs in self._streams:
            output._add_stream(encoder_stream, codec, **kwargs)
        self._output, self._first_frame = output, True

    def close_output(self) -> None:
        if not self._output:
            raise RuntimeError("No underlying output has been opened")
        output, self._output = self._output, None
        output.stop()

    def outputframe(
        self, frame: bytes, keyframe: bool = True, timestamp: int = 0, packet: Any = None, audio: bool = False
    ) -> None:
        if self.buffer_duration_ms == 0 or not self.recording:
            return
        self._circular.append((frame, keyframe, timestamp))
        self._flush(timestamp, self._output)

    def _flush(self, now: int | None, output: FakePyavOutput | None) -> None:
        while self._circular:
            frame, keyframe, timestamp = self._circular[0]
            if now and now - timestamp < self.buffer_duration_ms * 1000:
                break
            self._circular.pop(0)
            if keyframe:
                if self._first_frame:
                    self._time_offset = timestamp
                self._first_frame = False
            if not self._first_frame and output:
                output.outputframe(frame, keyframe, timestamp - self._time_offset)

    def start(self) -> None:
        if self.recording:
            raise RuntimeError("Circular output is running")
        self.recording = True

    def stop(self) -> None:
        if not self.recording:
            raise RuntimeError("Circular output was not started")
        output, self.recording, self._output = self._output, False, None
        if output:
            self._flush(None, output)
            output.stop()

    def _add_stream(self, encoder_stream: str, codec_name: str, **kwargs: Any) -> None:
        self._streams.append((encoder_stream, codec_name, kwargs))


class FakePyavOutput(FakeOutput):
    """picamera2.outputs.PyavOutput (0.3.38): muxes the encoder's bytes with PyAV; errors go to ``error_callback``."""

    def __init__(self, output_name: str, format: str | None = None, pts: Any = None, options: Any = None) -> None:
        super().__init__(pts)
        self._output_name, self._format, self._options = output_name, format, options
        self._streams: dict[str, Any] = {}
        self._container: Any = None
        self.error_callback: Callable[[Exception], None] | None = None

    def _add_stream(self, encoder_stream: str, codec_name: str, **kwargs: Any) -> None:
        self._streams[encoder_stream] = self._container.add_stream(codec_name, **kwargs)

    def start(self) -> None:
        self._container = av.open(self._output_name, "w", format=self._format, options=self._options)
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._container:
            with contextlib.suppress(Exception):  # as picamera2 does, which is why the recorder checks the file
                self._container.close()
            self._container = None

    def outputframe(
        self, frame: bytes, keyframe: bool = True, timestamp: int = 0, packet: Any = None, audio: bool = False
    ) -> None:
        if self.recording and self._container:
            made = av.Packet(frame)
            made.dts = made.pts = timestamp
            made.time_base = Fraction(1, 1000000)
            made.is_keyframe = keyframe
            made.stream = self._streams["video"]
            try:
                self._container.mux(made)
            except Exception as error:
                with contextlib.suppress(Exception):
                    self._container.close()
                self._container = None
                if self.error_callback:
                    self.error_callback(error)


class FakeH264Encoder:
    """picamera2.encoders.H264Encoder: its constructor, outputs and start/stop; libx264 stands in for the VideoCore.

    Like the hardware encoder, it hands its outputs raw H.264 (sequence headers repeated at every
    keyframe, a keyframe every ``iperiod`` frames) with microsecond timestamps from its first frame.
    """

    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        self.iperiod, self.framerate = iperiod, framerate
        self.width = self.height = 0
        self.output: list[Any] = []
        self.running = False
        self._codec: H264Encoder | None = None
        self._first: float | None = None
        self._count = 0

    def start(self, quality: Any = None) -> None:
        if self.running:
            raise RuntimeError("Encoder already running")
        self.running = True
        for out in self.output:
            out.start()
        for out in self.output:
            out._add_stream("video", "h264", width=self.width, height=self.height)
        self._codec = H264Encoder(self.width, self.height, Fraction(1, 1000000), low_latency=True, threads=1)

    def stop(self) -> None:
        if not self.running:
            raise RuntimeError("Encoder already stopped")
        self.running = False
        for out in self.output:
            out.stop()

    def encode(self, image: Image, at: float) -> None:
        assert self._codec is not None
        self._first = at if self._first is None else self._first
        timestamp = round((at - self._first) * 1e6)
        keyframe = self._count % (self.iperiod or 60) == 0
        self._count += 1
        for packet in self._codec.encode(image, timestamp, keyframe):
            for out in self.output:
                out.outputframe(bytes(packet), packet.is_keyframe, timestamp, None, False)


class FakePicamera2:
    """The parts of a Picamera2 object that recording uses, and ``capture`` to play a frame through its encoders."""

    def __init__(self, size: tuple[int, int] = SIZE, noise: np.random.Generator | None = None) -> None:
        self.size, self.noise = size, noise
        self.encoders: set[FakeH264Encoder] = set()
        self.start_calls: list[dict[str, Any]] = []

    def start_encoder(
        self,
        encoder: FakeH264Encoder,
        output: Any = None,
        pts: Any = None,
        quality: Any = None,
        name: str | None = None,
    ) -> None:
        self.start_calls.append({"encoder": encoder, "output": output, "name": name})
        encoder.output = [output]
        encoder.width, encoder.height = self.size
        encoder.framerate = encoder.framerate or 30.0
        encoder.start(quality)
        self.encoders.add(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        for encoder in [encoders] if encoders is not None else list(self.encoders):
            encoder.stop()
            self.encoders.remove(encoder)

    def capture(self, index: int) -> None:
        for encoder in self.encoders:
            encoder.encode(picture(index, self.size, self.noise), 1000.0 + index / FPS)


def fake_picamera2_modules() -> list[types.ModuleType]:
    """``picamera2``, ``picamera2.encoders`` and ``picamera2.outputs``, made of the stand-ins above."""
    package, encoders, outputs = (types.ModuleType(n) for n in ("picamera2", "picamera2.encoders", "picamera2.outputs"))
    encoders.H264Encoder = FakeH264Encoder  # type: ignore[attr-defined]
    outputs.CircularOutput2, outputs.PyavOutput = FakeCircularOutput2, FakePyavOutput  # type: ignore[attr-defined]
    package.encoders, package.outputs = encoders, outputs  # type: ignore[attr-defined]
    return [package, encoders, outputs]


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> list[types.ModuleType]:
    modules = fake_picamera2_modules()
    for module in modules:
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return modules


def capture(camera: FakePicamera2, recorder: Recorder, indices: Iterable[int]) -> None:
    for index in indices:
        camera.capture(index)
        recorder.feed(frame(index))  # as the grabber does; the encoder has the frame already


@pytest.mark.usefixtures("fake_picamera2")
def test_the_picamera2_recorder_writes_the_part_then_renames_with_the_preroll(tmp_path: Path) -> None:
    camera = FakePicamera2()
    recorder = PiCamera2Recorder(lambda: camera, preroll=2.0, fps=FPS)
    recorder.start()
    (call,) = camera.start_calls
    assert call["encoder"].iperiod == 10  # a keyframe a second
    assert call["output"].buffer_duration_ms == 3000  # the pre-roll and one GOP
    assert call["name"] is None  # the camera's own encode stream

    path = tmp_path / "cam0" / "2024-05-01" / "120000_e1.mp4"
    capture(camera, recorder, range(50))
    recorder.begin(path)
    capture(camera, recorder, range(50, 65))
    assert files(tmp_path) == ["cam0/2024-05-01/120000_e1.mp4.part"]
    capture(camera, recorder, range(65, 80))
    assert recorder.end() == path
    assert files(tmp_path) == ["cam0/2024-05-01/120000_e1.mp4"]

    clip = decode(path)
    assert (clip.codec, clip.pix_fmt, clip.size) == ("h264", "yuv420p", SIZE)
    assert 29 - FPS <= clip.indices[0] <= 29  # the pre-roll, to within a GOP
    assert clip.indices == list(range(clip.indices[0], 80))  # the buffered tail was flushed in at end
    assert clip.times == pytest.approx([(i - clip.indices[0]) / FPS for i in clip.indices], abs=2e-3)

    recorder.begin(tmp_path / "next.mp4")  # the buffer was restarted: the next clip works too
    capture(camera, recorder, range(80, 120))
    assert recorder.end() == tmp_path / "next.mp4"
    assert decode(tmp_path / "next.mp4").indices[-1] == 119
    recorder.stop()
    assert camera.encoders == set()
    recorder.start()  # started again, it starts an encoder again
    assert len(camera.encoders) == 1
    recorder.stop()


@pytest.mark.usefixtures("fake_picamera2")
def test_a_picamera2_clip_whose_folder_vanishes_is_dropped_and_the_next_is_whole(tmp_path: Path) -> None:
    camera = FakePicamera2()
    recorder = PiCamera2Recorder(lambda: camera, preroll=1.0, fps=FPS)
    recorder.start()
    capture(camera, recorder, range(30))
    recorder.begin(tmp_path / "gone" / "clip.mp4")
    capture(camera, recorder, range(30, 50))
    shutil.rmtree(tmp_path / "gone")
    capture(camera, recorder, range(50, 60))
    assert recorder.end() is None
    assert files(tmp_path) == []

    recorder.begin(tmp_path / "ok.mp4")
    capture(camera, recorder, range(60, 80))
    assert recorder.end() == tmp_path / "ok.mp4"
    assert decode(tmp_path / "ok.mp4").indices[-1] == 79
    recorder.stop()


@pytest.mark.usefixtures("fake_picamera2")
def test_the_picamera2_encoder_follows_a_reopened_camera(tmp_path: Path) -> None:
    cameras = [FakePicamera2()]
    recorder = PiCamera2Recorder(lambda: cameras[-1] if cameras else None, preroll=1.0, fps=FPS)
    recorder.start()
    capture(cameras[0], recorder, range(30))
    recorder.begin(tmp_path / "across.mp4")
    capture(cameras[0], recorder, range(30, 50))

    cameras.append(FakePicamera2(size=(320, 240)))  # the source reopened: a new Picamera2 object
    capture(cameras[1], recorder, range(50, 51))  # its first frame moves the encoder
    assert cameras[0].encoders == set()
    assert len(cameras[1].encoders) == 1
    capture(cameras[1], recorder, range(51, 70))
    path = recorder.end()
    assert path == tmp_path / "across.mp4"
    assert decode(path).indices[-1] == 49  # closed with what the old camera gave

    recorder.begin(tmp_path / "new.mp4")
    capture(cameras[1], recorder, range(70, 90))
    assert recorder.end() == tmp_path / "new.mp4"
    assert decode(tmp_path / "new.mp4").size == (320, 240)
    recorder.stop()


def test_the_picamera2_recorder_imports_picamera2_only_when_a_camera_is_there(tmp_path: Path) -> None:
    recorder = PiCamera2Recorder(lambda: None, preroll=1.0)  # picamera2 is not installed here
    recorder.start()
    recorder.feed(frame(0))
    recorder.begin(tmp_path / "clip.mp4")
    assert recorder.end() is None  # no encoder: no clip, and no exception for the events stage
    recorder.stop()


# -- a small disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("quota", [10_000_000, None])
def test_clips_on_a_small_disk_never_pass_the_quota_or_the_free_floor_by_more_than_a_check(
    tmp_path: Path, quota: int | None
) -> None:
    """A 24 MB file system, a 10 MB quota or none, 10 % kept free, busy frames (large packets), events back
    to back: retention as the service runs it (before each clip, every 2 s while one is written, the clip
    cut short when it alone leaves no room). Before: clips reached 24 MB, 2.4 times the quota, between
    the five-minutely runs, and 4 clips were lost to the full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    try:
        check_every = 2.0
        store = ClipStore(disk / "clips", max_bytes=quota, max_age_seconds=0, min_free_share=0.1)
        recorder = SoftwareRecorder(preroll=1.0)
        recorder.start()
        noise = np.random.default_rng(5)
        finished: list[Path | None] = []
        peaks: list[tuple[int, int, int]] = []
        last_check, clip_started = 0.0, None
        for index in range(3000):  # 300 s of frames, fed as fast as they encode
            at = 1000.0 + index / FPS
            if clip_started is None and index % 50 == 0:  # an event every 5 s while there is room
                with contextlib.suppress(RecordingError):
                    recorder.begin(store.path_for("cam0", f"e{index}", at))
                    clip_started = at
            recorder.feed(Frame(0, index, at, picture(index, (320, 240), noise)))
            if clip_started is not None and at - clip_started >= 20.0:  # each event lasts 20 s
                finished.append(recorder.end())
                clip_started = None
            if at - last_check >= check_every:
                store.enforce(at)
                if not store.room and clip_started is not None:
                    finished.append(recorder.end())  # cut short, as the service does
                    clip_started = None
                last_check = at
                clips = sum(p.stat().st_size for p in (disk / "clips").rglob("*") if p.is_file())
                usage = shutil.disk_usage(disk)
                peaks.append((clips, usage.free, usage.total))
        if clip_started is not None:
            finished.append(recorder.end())
        recorder.stop()
        # one check's worth of writing: the most the clips grew between two checks
        segment = max(b[0] - a[0] for a, b in itertools.pairwise(peaks))
        print(f"{len(finished)} clips, {finished.count(None)} lost; peak {max(c for c, _, _ in peaks)} bytes of clips")
        print(f"one check's worth of writing: {segment} bytes")
        assert 0 < segment < 2_000_000
        assert quota is None or all(clips <= quota + segment for clips, _, _ in peaks)
        assert all(free >= 0.1 * total - segment for _, free, total in peaks)
        assert len(finished) >= 10
        assert None not in finished  # no clip lost to the full disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
