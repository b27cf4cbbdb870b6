"""Keras layers of the toolchain's own models, registered so that their ``.keras`` files load again."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


def anchor_grid(size: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (N, 2) in input pixels and their strides (N,), level by level, row by row."""
    centres, scales = [], []
    for stride in strides:
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres.append(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1) * stride)
        scales.append(np.full(cells * cells, stride, np.float32))
    return np.concatenate(centres).astype(np.float32), np.concatenate(scales)


@keras.saving.register_keras_serializable(package="appliance")
class AnchorDecode(keras.layers.Layer):  # type: ignore[misc]
    """Per-level maps [B, H, W, 4 + C] to the yolov8 contract [B, 4 + C, N].

    Each anchor predicts its distances to the box's left, top, right and bottom edges and C class
    logits; the output holds cx, cy, w, h normalised to 0..1 (so that boxes and scores share the
    int8 output well) and sigmoid scores. Distances are sigmoid(x) times REACH strides: int8
    models run the logistic exactly scaled, where softplus (EXP and LOG) measured box sizes off
    by their whole range. Boxes are clipped to the input, which keeps every output in 0..1.
    ``pixels`` gives boxes in input pixels instead, as Ultralytics' ONNX exports have them.
    """

    REACH = 8.0  # strides: the farthest an edge may be from its anchor (covers each level's objects)

    def __init__(self, strides: tuple[int, ...], size: int, pixels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strides, self.size, self.pixels = tuple(strides), int(size), bool(pixels)
        centres, scales = anchor_grid(self.size, self.strides)
        self.centres = centres
        self.scales = scales[:, None]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strides": list(self.strides), "size": self.size, "pixels": self.pixels}

    def call(self, maps: list[Any]) -> Any:
        flat = keras.ops.concatenate([keras.ops.reshape(m, (-1, m.shape[1] * m.shape[2], m.shape[3])) for m in maps], 1)
        distances = keras.ops.sigmoid(flat[..., :4]) * (self.scales * self.REACH)
        top_left = keras.ops.clip(self.centres - distances[..., :2], 0.0, float(self.size))
        bottom_right = keras.ops.clip(self.centres + distances[..., 2:4], 0.0, float(self.size))
        unit = 1.0 if self.pixels else float(self.size)
        centre = (top_left + bottom_right) / (2.0 * unit)
        extent = (bottom_right - top_left) / unit
        scores = keras.ops.sigmoid(flat[..., 4:])
        return keras.ops.transpose(keras.ops.concatenate([centre, extent, scores], -1), (0, 2, 1))
