"""H.264 MP4 files that ordinary players open, written with PyAV (FFmpeg's libx264).

OpenCV's own writer only makes MPEG-4 Part 2 here, which browsers do not play.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

from appliance.inference.imaging import Image


class Mp4Writer:
    """Frames (BGR, all one size) in, an H.264 MP4 out; ``close`` finishes the file."""

    def __init__(self, path: Path, fps: float, width: int, height: int, crf: int = 23) -> None:
        import av  # only where video is written

        self.path = path
        self._container: Any = av.open(str(path), mode="w", format="mp4")
        stream: Any = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width - width % 2, height - height % 2  # yuv420p wants even sizes
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf)}
        self._stream = stream
        self._frame_type = av.VideoFrame
        self.frames = 0

    def write(self, image: Image) -> None:
        frame = self._frame_type.from_ndarray(image[: self._stream.height, : self._stream.width], format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
