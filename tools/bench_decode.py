"""Time the yolov8 decode + NMS on a 320-input head (2,100 anchors), as the appliance runs it.

    .venv/bin/python -m tools.bench_decode

The output is int8 like a converted model's: 80 COCO classes, a few people, each covered by a
cluster of anchors with high scores (what NMS has to merge), and low scores elsewhere.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from appliance.inference.detector import DEFAULT_PRESENCE, DetectorSettings
from appliance.inference.model import TensorInfo
from appliance.inference.yolov8 import decode

ANCHORS = 40 * 40 + 20 * 20 + 10 * 10  # strides 8, 16, 32 at 320
CLASSES = 80


def head_output(people: int, rng: np.random.Generator) -> tuple[np.ndarray, TensorInfo]:
    real = np.zeros((4 + CLASSES, ANCHORS), np.float32)
    real[:4] = rng.uniform(0.05, 0.95, (4, ANCHORS)) * [[1], [1], [0.3], [0.6]]
    real[4:] = rng.uniform(0, 0.05, (CLASSES, ANCHORS))
    for _ in range(people):
        cluster = rng.choice(ANCHORS, 25, replace=False)
        real[:4, cluster] = rng.uniform(0.1, 0.9, (4, 1)) * [[1], [1], [0.3], [0.6]] + rng.normal(0, 0.01, (4, 25))
        real[4, cluster] = rng.uniform(0.5, 0.95, 25)
    tensor = TensorInfo("output0", 0, (1, 4 + CLASSES, ANCHORS), np.dtype(np.int8), 1 / 255, -128)
    return tensor.quantize(real), tensor


def median_us(action, repeats: int = 2000) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times), float(np.percentile(times, 90))


def main() -> None:
    rng = np.random.default_rng(0)
    settings = DetectorSettings(score_threshold=DEFAULT_PRESENCE.score)  # the reference detector reports from it
    print(f"decode + NMS, {ANCHORS} anchors, {CLASSES} classes, int8 output, score >= {settings.score_threshold}")
    for people in (0, 3, 10):
        raw, tensor = head_output(people, rng)
        for name, classes in (("person only", np.array([0])), ("all 80 classes", np.arange(CLASSES))):
            boxes, _, _ = decode(raw, tensor, classes, (320.0, 320.0), settings)
            med, p90 = median_us(
                lambda raw=raw, tensor=tensor, classes=classes: decode(raw, tensor, classes, (320.0, 320.0), settings)
            )
            print(f"  {people:2d} people, {name:14s}: median {med:6.1f} us, p90 {p90:6.1f} us, {len(boxes)} boxes kept")


if __name__ == "__main__":
    main()
