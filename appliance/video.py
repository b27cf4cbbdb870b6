"""H.264 video with PyAV (FFmpeg's libx264): an encoder of BGR frames, and MP4 files that ordinary players open.

OpenCV's own writer only makes MPEG-4 Part 2 here, which browsers do not play. The encoder lives
apart from any file so that a recorder can keep encoding into a pre-roll ring and mux the same
packets into one clip after another; :class:`Mp4Writer` is the simple case of one file.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import av
import cv2
from av.container import OutputContainer
from av.video.frame import PictureType
from av.video.stream import VideoStream

from appliance.inference.imaging import Image


class H264Encoder:
    """BGR images in, H.264 packets out: libx264, yuv420p, even sizes.

    Sequence headers are repeated before every keyframe (no global header), so a file may start at
    any keyframe; the MP4 muxer builds its ``avcC`` box from the first one. Timestamps are the
    caller's, in ``time_base`` units, and must increase.
    """

    def __init__(
        self,
        width: int,
        height: int,
        time_base: Fraction,
        *,
        preset: str = "veryfast",
        crf: int = 23,
        low_latency: bool = False,
        threads: int = 0,
    ) -> None:
        self.source_size = (width, height)
        self.width, self.height = width - width % 2, height - height % 2  # yuv420p wants even sizes
        self.time_base = time_base
        context = av.CodecContext.create("libx264", "w")
        assert isinstance(context, av.VideoCodecContext)
        context.width, context.height = self.width, self.height
        context.pix_fmt = "yuv420p"
        context.time_base = time_base
        context.thread_count = threads  # 0: libx264 picks
        options = {"preset": preset, "crf": str(crf)}
        if low_latency:
            # One packet out for every frame in, at once (no B-frames, no look-ahead): a ring of
            # packets is then complete up to the newest frame without flushing the encoder.
            options["tune"] = "zerolatency"
        context.options = options
        self._context = context

    def encode(self, image: Image, pts: int, keyframe: bool = False) -> list[av.Packet[Any]]:
        """Encode one frame shown at ``pts``; ``keyframe`` forces an IDR frame. Other sizes are scaled."""
        height, width = image.shape[:2]
        if (width - width % 2, height - height % 2) == (self.width, self.height):
            image = image[: self.height, : self.width]  # drop an odd last row or column
        else:
            image = cast(Image, cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA))
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, self.time_base
        if keyframe:
            frame.pict_type = PictureType.I
        return self._context.encode(frame)

    def flush(self) -> list[av.Packet[Any]]:
        """The packets still held by the encoder; it takes no frames after this."""
        return self._context.encode(None)


def add_h264_stream(container: OutputContainer, encoder: H264Encoder, rate: Fraction | None = None) -> VideoStream:
    """A stream of ``container`` that takes ``encoder``'s packets as they are (no second codec is opened)."""
    stream = container.add_mux_stream("h264", rate=rate, width=encoder.width, height=encoder.height)
    stream.time_base = encoder.time_base
    assert isinstance(stream, VideoStream)
    return stream


def whole_mp4(path: Path) -> bool:
    """Whether ``path`` is an MP4 whose boxes fill it exactly, with a movie box and media data: a clip whose
    end could not be written (a full disk while its last fragment or index was flushed) ends in a box
    cut short. Reads the box headers only."""
    try:
        size = path.stat().st_size
        seen: set[bytes] = set()
        with path.open("rb") as stream:
            offset = 0
            while offset < size:
                stream.seek(offset)
                header = stream.read(8)
                if len(header) < 8:
                    return False
                length, kind = struct.unpack(">I4s", header)
                if length == 1:  # a 64-bit size follows the type
                    wide = stream.read(8)
                    if len(wide) < 8:
                        return False
                    (length,) = struct.unpack(">Q", wide)
                elif length == 0:  # to the end of the file
                    length = size - offset
                if length < 8 or offset + length > size:
                    return False
                seen.add(kind)
                offset += length
        return {b"moov", b"mdat"} <= seen
    except OSError:
        return False


INTERRUPTED = "interrupted: the appliance stopped before the clip ended; it holds what was on the disk"


def salvage(part: Path, target: Path) -> int:
    """Remux what ``part`` (a fragmented MP4 cut short) holds into a whole MP4 at ``target``, marked
    interrupted in its metadata; the packets copied, 0 (and no ``target``) when there was no video."""
    copied = 0
    try:
        with av.open(str(part)) as source:
            if not source.streams.video:
                return 0
            video = source.streams.video[0]
            with av.open(str(target), mode="w", format="mp4") as out:
                out.metadata["comment"] = INTERRUPTED
                stream = out.add_stream_from_template(video)
                try:
                    for packet in source.demux(video):
                        if packet.dts is None:  # the demuxer's flush packet, and what a torn fragment leaves
                            continue
                        packet.stream = stream
                        out.mux(packet)
                        copied += 1
                except (av.FFmpegError, EOFError):
                    pass  # the torn end of the last fragment: keep what came before it
    except (OSError, av.FFmpegError):
        pass
    if not copied:
        target.unlink(missing_ok=True)
    return copied


class Mp4Writer:
    """Frames (BGR, all one size) in, an H.264 MP4 out at a constant rate; ``close`` finishes the file."""

    def __init__(self, path: Path, fps: float, width: int, height: int, crf: int = 23) -> None:
        self.path = path
        rate = Fraction(fps).limit_denominator(1001)
        self._encoder = H264Encoder(width, height, 1 / rate, crf=crf)
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = add_h264_stream(self._container, self._encoder, rate)
        self.frames = 0

    def write(self, image: Image) -> None:
        self._mux(self._encoder.encode(image, self.frames))
        self.frames += 1

    def close(self) -> None:
        self._mux(self._encoder.flush())
        self._container.close()

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        for packet in packets:
            packet.stream = self._stream
            self._container.mux(packet)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
