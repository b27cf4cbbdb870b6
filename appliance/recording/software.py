"""Clips of OpenCV, file and sim cameras: every frame encoded at once into a ring of H.264 packets.

Keeping pre-roll as encoded packets rather than raw frames is what NVRs do: three seconds of
640x480 at 10 fps take under 100 KB (a sim scene, measured) instead of 27 MB. A clip is then only
muxing: the ring from its oldest keyframe, and every packet after it as it is encoded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import OutputContainer
from av.video.stream import VideoStream

from appliance.cameras.source import Frame
from appliance.recording.recorder import FRAGMENTED_MP4, SYNC_EVERY, Recorder, discard, finalise, part_path, sync
from appliance.video import H264Encoder, add_h264_stream, whole_mp4

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)  # the MPEG clock: frame times keep their precision whatever the rate


@dataclass(frozen=True, slots=True)
class Encoded:
    """One encoded frame: its packet and when it was grabbed."""

    time: float  # the frame's time.monotonic()
    pts: int  # in TIME_BASE, from the encoder's first frame
    duration: int  # the interval since the previous frame, the best guess of this one's
    packet: av.Packet[Any]

    @property
    def keyframe(self) -> bool:
        return self.packet.is_keyframe


class PacketRing:
    """The encoded packets of the last ``keep`` seconds, in whole GOPs, so it always starts at a keyframe.

    A GOP is dropped once the next one starts at or before ``newest - keep``: the ring then starts
    at the latest keyframe at or before that time and spans at most ``keep`` plus one GOP.
    """

    def __init__(self, keep: float) -> None:
        self._keep = keep
        self._gops: deque[list[Encoded]] = deque()

    def append(self, entry: Encoded) -> None:
        if entry.keyframe:
            self._gops.append([entry])
        elif self._gops:
            self._gops[-1].append(entry)
        else:
            return  # nothing can be decoded from it without the keyframe before it
        limit = entry.time - self._keep
        while len(self._gops) > 1 and self._gops[1][0].time <= limit:
            self._gops.popleft()

    def clear(self) -> None:
        self._gops.clear()

    def __iter__(self) -> Iterator[Encoded]:
        return (entry for gop in self._gops for entry in gop)

    @property
    def seconds(self) -> float:
        """Time from the oldest frame held to the newest."""
        return self._gops[-1][-1].time - self._gops[0][0].time if self._gops else 0.0

    @property
    def bytes(self) -> int:
        return sum(entry.packet.size for entry in self)


class ClipFile:
    """One clip being written: an MP4 under the part name, opened when its first packet comes."""

    def __init__(self, path: Path) -> None:
        self.path, self.part = path, part_path(path)
        self.failed = False
        self._container: OutputContainer | None = None
        self._stream: VideoStream | None = None
        self._origin = 0  # pts of the first packet, which the clip shows at 0
        self._synced = 0.0  # time.monotonic() of the part's last sync

    def write(self, entry: Encoded, encoder: H264Encoder) -> None:
        """Mux one packet; a failure is logged, removes the part, and makes the clip end as None."""
        if self.failed:
            return
        try:
            if self._container is None or self._stream is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._container = av.open(str(self.part), mode="w", format="mp4", options=FRAGMENTED_MP4)
                self._stream = add_h264_stream(self._container, encoder)
                self._origin = entry.pts
            packet = entry.packet
            packet.stream = self._stream
            packet.time_base = TIME_BASE
            # Zero latency has no B-frames: decode order is display order.
            packet.pts = packet.dts = entry.pts - self._origin
            packet.duration = entry.duration
            self._container.mux(packet)
            if entry.keyframe and entry.time - self._synced >= SYNC_EVERY:  # a fragment has just been written
                sync(self.part)
                self._synced = entry.time
        except (OSError, av.FFmpegError) as error:
            log.error("clip %s failed while writing, it is dropped: %s", self.path, error)
            self.abandon()

    def finish(self) -> Path | None:
        """Close the file and give it its final name: the path, or None when nothing usable was written."""
        if self.failed:
            return None
        if self._container is None:
            log.warning("clip %s got no frames, so there is none", self.path)
            return None
        try:
            self._container.close()
        except (OSError, av.FFmpegError) as error:
            log.error("clip %s could not be closed, it is dropped: %s", self.path, error)
            self.abandon()
            return None
        if not whole_mp4(self.part):  # closing swallows a failure to write the last fragment
            log.error("clip %s could not be written whole (was the disk full?), it is dropped", self.path)
            self.abandon()
            return None
        return finalise(self.part, self.path)

    def abandon(self) -> None:
        self.failed = True
        if self._container is not None:
            with contextlib.suppress(OSError, av.FFmpegError):  # the first error is the one logged
                self._container.close()
            self._container = None
        discard(self.part)


class SoftwareRecorder(Recorder):
    """Encodes every fed frame with libx264 (ultrafast, zero latency, one thread) and keeps ``preroll`` seconds.

    Keyframes are forced every ``keyframe_every`` seconds of frame time, so the pre-roll is
    accurate to that. Timestamps are the frames' own, so a clip plays at real speed even when the
    source's rate varies. A source that changes its frame size restarts the encoder (and empties
    the ring); during a clip, frames are scaled to the clip's size until it ends.
    """

    def __init__(
        self, preroll: float, *, keyframe_every: float = 1.0, preset: str = "ultrafast", crf: int = 23
    ) -> None:
        self.preroll, self.keyframe_every = preroll, keyframe_every
        self._preset, self._crf = preset, crf
        self._lock = threading.Lock()
        self._running = False
        self._ring = PacketRing(preroll)
        self._clip: ClipFile | None = None
        self._encoder: H264Encoder | None = None
        self._origin = 0.0  # time of the encoder's first frame: pts 0
        self._last_pts = -1
        self._last_keyframe = 0.0

    def start(self) -> None:
        with self._lock:
            self._running = True

    def stop(self) -> None:
        with self._lock:
            self._running = False
            clip, self._clip = self._clip, None
            self._encoder = None  # no flush needed: at zero latency every frame's packet is out already
            self._ring.clear()
        if clip is not None:
            log.info("recorder stopping: clip %s finished as %s", clip.path, clip.finish())

    def feed(self, frame: Frame) -> None:
        with self._lock:
            if not self._running:
                return
            encoder = self._encoder_for(frame)
            for entry in self._encode(encoder, frame):
                self._ring.append(entry)
                if self._clip is not None:
                    self._clip.write(entry, encoder)

    def begin(self, path: Path) -> None:
        with self._lock:
            if self._clip is not None:
                raise RuntimeError(f"a clip is already being recorded to {self._clip.path}")
            clip = self._clip = ClipFile(path)
            if self._encoder is not None:
                for entry in self._ring:  # the pre-roll
                    clip.write(entry, self._encoder)

    def end(self) -> Path | None:
        with self._lock:
            clip, self._clip = self._clip, None
        # Closing and syncing can take a while on an SD card: the grabber keeps feeding meanwhile.
        return clip.finish() if clip is not None else None

    @property
    def ring_seconds(self) -> float:
        with self._lock:
            return self._ring.seconds

    @property
    def ring_bytes(self) -> int:
        with self._lock:
            return self._ring.bytes

    def _encoder_for(self, frame: Frame) -> H264Encoder:
        height, width = frame.image.shape[:2]
        encoder = self._encoder
        if encoder is not None and (encoder.source_size == (width, height) or self._clip is not None):
            return encoder
        if encoder is not None:
            log.info("frame size changed to %dx%d: the encoder restarts", width, height)
        encoder = self._encoder = H264Encoder(
            width, height, TIME_BASE, preset=self._preset, crf=self._crf, low_latency=True, threads=1
        )
        self._ring.clear()  # packets of another encoder cannot share a file with this one's
        self._origin, self._last_pts = frame.time, -1
        return encoder

    def _encode(self, encoder: H264Encoder, frame: Frame) -> list[Encoded]:
        pts = max(round((frame.time - self._origin) / TIME_BASE), self._last_pts + 1)  # strictly increasing
        duration = pts - self._last_pts if self._last_pts >= 0 else 0
        # A millisecond of slack, so that frames exactly keyframe_every apart are not one GOP late.
        keyframe = self._last_pts < 0 or frame.time - self._last_keyframe >= self.keyframe_every - 1e-3
        self._last_pts = pts
        entries = []
        for packet in encoder.encode(frame.image, pts, keyframe):
            if packet.is_keyframe:
                self._last_keyframe = frame.time
            entries.append(Encoded(frame.time, pts, duration, packet))
        return entries
