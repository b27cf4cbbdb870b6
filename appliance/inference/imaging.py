"""Frame geometry and pixel encoding shared by the model families and the toolchain.

Frames are BGR ``uint8`` arrays of shape (height, width, 3), OpenCV's order, which is what
OpenCV sources and picamera2's ``RGB888`` deliver. Models see RGB. The toolchain calls the same
functions when it calibrates and trains, so a model is fed the same way in both places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from appliance.inference.model import TensorInfo

Image = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
PAD_VALUE = 114  # grey, the letterbox padding Ultralytics trains with


def _rgb_into(src: Image, dst: Image) -> None:
    """BGR ``src`` resized to exactly ``dst``'s size (area filter when shrinking) and written into ``dst`` as RGB.

    A frame already of ``dst``'s size (a camera stream sized for the model) is converted straight
    into ``dst``, one pass instead of a copy and a pass.
    """
    height, width = dst.shape[:2]
    if src.shape[:2] != (height, width):
        shrinking = width < src.shape[1] or height < src.shape[0]
        cv2.resize(src, (width, height), dst=dst, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        src = dst
    cv2.cvtColor(src, cv2.COLOR_BGR2RGB, dst=dst)


@dataclass(frozen=True)
class Letterbox:
    """How a frame sits in the model input: input = frame * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int
    width: int  # of the resized frame inside the input
    height: int
    frame_width: int
    frame_height: int

    @classmethod
    def fit(cls, frame_width: int, frame_height: int, input_width: int, input_height: int) -> Letterbox:
        scale = min(input_width / frame_width, input_height / frame_height)
        width = min(input_width, max(1, round(frame_width * scale)))
        height = min(input_height, max(1, round(frame_height * scale)))
        return cls(
            scale, (input_width - width) // 2, (input_height - height) // 2, width, height, frame_width, frame_height
        )

    @property
    def region(self) -> tuple[slice, slice]:
        """Rows and columns of the input that hold the frame."""
        return slice(self.pad_y, self.pad_y + self.height), slice(self.pad_x, self.pad_x + self.width)

    def to_frame(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Boxes (N, 4) x1 y1 x2 y2 in input pixels mapped to frame pixels, clipped to the frame."""
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale
        np.clip(out[:, 0::2], 0, self.frame_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_height, out=out[:, 1::2])
        return out


class LetterboxCanvas:
    """Letterboxes frames into one reused RGB canvas; the layout is recomputed only when the frame size changes.

    The grey bands are painted once per layout; a frame touches only its own region of the canvas,
    resized into it and turned from BGR into RGB there, in place: no copy of the frame, no
    per-frame allocation.
    """

    def __init__(self, input_width: int, input_height: int) -> None:
        self.rgb: Image = np.full((input_height, input_width, 3), PAD_VALUE, np.uint8)
        self.layout: Letterbox | None = None

    def fill(self, frame: Image) -> Letterbox:
        """Put ``frame`` into :attr:`rgb` and return where it went."""
        height, width = frame.shape[:2]
        layout = self.layout
        if layout is None or (layout.frame_width, layout.frame_height) != (width, height):
            input_height, input_width = self.rgb.shape[:2]
            layout = self.layout = Letterbox.fit(width, height, input_width, input_height)
            self.rgb[:] = PAD_VALUE
        _rgb_into(frame, self.rgb[layout.region])
        return layout


def letterbox(frame: Image, input_width: int, input_height: int) -> tuple[Image, Letterbox]:
    """A new RGB letterboxed copy of ``frame`` (for one-off use; pipelines keep a LetterboxCanvas)."""
    canvas = LetterboxCanvas(input_width, input_height)
    return canvas.rgb, canvas.fill(frame)


def square_crop(frame: Image, box: Box, margin: float, size: int) -> Image:
    """RGB ``size`` x ``size`` crop of a square around ``box``, widened by ``margin`` of its longer side
    on each side; the part outside the frame is grey. The aspect ratio of the person is kept."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    left = round((x1 + x2 - side) / 2)
    top = round((y1 + y2 - side) / 2)
    n = max(1, round(side))
    square: Image = np.full((n, n, 3), PAD_VALUE, np.uint8)
    height, width = frame.shape[:2]
    fx1, fy1 = max(left, 0), max(top, 0)
    fx2, fy2 = min(left + n, width), min(top + n, height)
    if fx2 > fx1 and fy2 > fy1:
        square[fy1 - top : fy2 - top, fx1 - left : fx2 - left] = frame[fy1:fy2, fx1:fx2]
    out: Image = np.empty((size, size, 3), np.uint8)
    _rgb_into(square, out)
    return out


def stretch(frame: Image, input_width: int, input_height: int) -> Image:
    """RGB copy of the whole frame resized to the input size (aspect ratio not kept)."""
    out: Image = np.empty((input_height, input_width, 3), np.uint8)
    _rgb_into(frame, out)
    return out


def pixel_values(rgb: npt.NDArray[Any], pixel_range: tuple[float, float]) -> npt.NDArray[np.float32]:
    """Real model input for 0..255 pixels: 0 maps to ``pixel_range[0]``, 255 to ``pixel_range[1]``."""
    low, high = pixel_range
    return (np.asarray(rgb, np.float32) * np.float32((high - low) / 255.0) + np.float32(low)).astype(np.float32)


class PixelEncoder:
    """Turns RGB pixels into an image input tensor's values through a 256-entry lookup table.

    The table holds ``tensor.quantize(pixel_values(p))`` for every pixel value ``p``, so int8,
    uint8 and float inputs cost one table look-up per pixel and follow the tensor's own
    quantization exactly.
    """

    def __init__(self, tensor: TensorInfo, pixel_range: tuple[float, float]) -> None:
        self.tensor = tensor
        self._table = tensor.quantize(pixel_values(np.arange(256), pixel_range))
        self._out = np.empty(tensor.shape, tensor.dtype)

    def encode(self, rgb: Image, region: tuple[slice, slice] | None = None) -> npt.NDArray[Any]:
        """``rgb`` (of the input's height and width) as the tensor's values, in a reused buffer.

        With ``region`` (rows, columns) only that part is encoded; the rest keeps what the
        previous call wrote there.
        """
        out = self._out.reshape(rgb.shape)
        if region is None:
            cv2.LUT(rgb, self._table, dst=out)
        else:
            cv2.LUT(rgb[region], self._table, dst=out[region])
        return self._out


class LetterboxEncoder:
    """Frames letterboxed straight into an image input tensor's values, in reused buffers.

    The grey bands are encoded once per layout; after that only the frame's region is
    letterboxed and encoded: a quarter less work for a 4:3 frame in a square input.
    """

    def __init__(self, tensor: TensorInfo, pixel_range: tuple[float, float]) -> None:
        _, height, width, _ = tensor.shape
        self.canvas = LetterboxCanvas(width, height)
        self.encoder = PixelEncoder(tensor, pixel_range)
        self._encoded: Letterbox | None = None  # the layout whose bands the buffer holds

    def encode(self, frame: Image) -> tuple[npt.NDArray[Any], Letterbox]:
        """The tensor's values for ``frame`` (valid until the next call) and where the frame went."""
        layout = self.canvas.fill(frame)
        region = layout.region if layout is self._encoded else None
        self._encoded = layout
        return self.encoder.encode(self.canvas.rgb, region), layout
