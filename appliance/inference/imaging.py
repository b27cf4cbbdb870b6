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


def _resize_into(src: Image, dst: Image) -> None:
    """Resize ``src`` to exactly ``dst``'s size, writing into ``dst`` (area filter when shrinking)."""
    height, width = dst.shape[:2]
    shrinking = width < src.shape[1] or height < src.shape[0]
    cv2.resize(src, (width, height), dst=dst, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


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

    def to_frame(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Boxes (N, 4) x1 y1 x2 y2 in input pixels mapped to frame pixels, clipped to the frame."""
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale
        np.clip(out[:, 0::2], 0, self.frame_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_height, out=out[:, 1::2])
        return out


class LetterboxCanvas:
    """Letterboxes frames into one reused RGB canvas; the layout is recomputed only when the frame size changes."""

    def __init__(self, input_width: int, input_height: int) -> None:
        self.rgb: Image = np.full((input_height, input_width, 3), PAD_VALUE, np.uint8)
        self._bgr: Image = self.rgb.copy()
        self.layout: Letterbox | None = None

    def fill(self, frame: Image) -> Letterbox:
        """Put ``frame`` into :attr:`rgb` and return where it went."""
        height, width = frame.shape[:2]
        layout = self.layout
        if layout is None or (layout.frame_width, layout.frame_height) != (width, height):
            input_height, input_width = self.rgb.shape[:2]
            layout = self.layout = Letterbox.fit(width, height, input_width, input_height)
            self._bgr[:] = PAD_VALUE
        region = self._bgr[layout.pad_y : layout.pad_y + layout.height, layout.pad_x : layout.pad_x + layout.width]
        _resize_into(frame, region)
        cv2.cvtColor(self._bgr, cv2.COLOR_BGR2RGB, dst=self.rgb)
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
    _resize_into(square, out)
    cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)
    return out


def stretch(frame: Image, input_width: int, input_height: int) -> Image:
    """RGB copy of the whole frame resized to the input size (aspect ratio not kept)."""
    out: Image = np.empty((input_height, input_width, 3), np.uint8)
    _resize_into(frame, out)
    cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)
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

    def encode(self, rgb: Image) -> npt.NDArray[Any]:
        """``rgb`` (of the input's height and width) as the tensor's values, in a reused buffer."""
        cv2.LUT(rgb, self._table, dst=self._out.reshape(rgb.shape))
        return self._out
