"""Keras layers of the toolchain's own models, registered so that their ``.keras`` files load again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np


def input_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(width, height) of an input given as one side (square) or as width and height."""
    if isinstance(size, int):
        return size, size
    width, height = size
    return int(width), int(height)


def anchor_grid(size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (N, 2) in input pixels and their strides (N,), level by level, row by row, for an
    input of ``size`` (width, height)."""
    width, height = size
    centres, scales = [], []
    for stride in strides:
        ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        centres.append(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1) * stride)
        scales.append(np.full(xs.size, stride, np.float32))
    return np.concatenate(centres).astype(np.float32), np.concatenate(scales)


@keras.saving.register_keras_serializable(package="appliance")
class AnchorDecode(keras.layers.Layer):  # type: ignore[misc]
    """Per-level maps [B, H, W, 4 + C] to the yolov8 contract [B, 4 + C, N].

    Each anchor predicts its distances to the box's left, top, right and bottom edges and C class
    logits; the output holds cx, cy, w, h normalised to 0..1 (so that boxes and scores share the
    int8 output well) and sigmoid scores. Distances are sigmoid(x) times REACH strides: int8
    models run the logistic exactly scaled, where softplus (EXP and LOG) measured box sizes off
    by their whole range. Boxes are clipped to the input, which keeps every output in 0..1.
    ``pixels`` gives boxes in input pixels instead, as Ultralytics' ONNX exports have them. ``size``
    is the input's width and height (one number for a square input, as older saved models have it).
    """

    REACH = 8.0  # strides: the farthest an edge may be from its anchor (covers each level's objects)

    def __init__(
        self, strides: tuple[int, ...], size: int | Sequence[int], pixels: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.strides, self.size, self.pixels = tuple(strides), input_size(size), bool(pixels)
        centres, scales = anchor_grid(self.size, self.strides)
        self.centres = centres
        self.scales = scales[:, None]
        self.extent = np.array(self.size, np.float32)  # x and y of the input's far corner

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strides": list(self.strides), "size": list(self.size), "pixels": self.pixels}

    def call(self, maps: list[Any]) -> Any:
        flat = keras.ops.concatenate([keras.ops.reshape(m, (-1, m.shape[1] * m.shape[2], m.shape[3])) for m in maps], 1)
        distances = keras.ops.sigmoid(flat[..., :4]) * (self.scales * self.REACH)
        top_left = keras.ops.clip(self.centres - distances[..., :2], 0.0, self.extent)
        bottom_right = keras.ops.clip(self.centres + distances[..., 2:4], 0.0, self.extent)
        unit = np.ones(2, np.float32) if self.pixels else self.extent
        centre = (top_left + bottom_right) / (2.0 * unit)
        extent = (bottom_right - top_left) / unit
        scores = keras.ops.sigmoid(flat[..., 4:])
        return keras.ops.transpose(keras.ops.concatenate([centre, extent, scores], -1), (0, 2, 1))
