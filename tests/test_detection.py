"""yolov8 decode, NMS and letterbox geometry, checked against a plain loop implementation."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from appliance.inference.detector import DetectorSettings, nms
from appliance.inference.imaging import PAD_VALUE, Letterbox, LetterboxCanvas, LetterboxEncoder, PixelEncoder, letterbox
from appliance.inference.model import TensorInfo
from appliance.inference.yolov8 import decode

INPUT = 320


@dataclass
class Kept:
    anchor: int
    score: float
    class_id: int
    box: tuple[float, float, float, float]


def reference_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_nested(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The share of the smaller box that lies inside the other."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min(max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]), max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


def reference_decode(
    real: np.ndarray, class_ids: list[int], scale: tuple[float, float], s: DetectorSettings
) -> tuple[list[Kept], list[tuple[Kept, Kept]], list[float]]:
    """One anchor at a time, then linear soft NMS: take the best, lower the score of each box of
    its class by its overlap with it (or drop a nested one), and start again.

    Also returns the pairs whose overlap was compared and every score that was compared with
    another or with the threshold, so that a test can set aside inputs sitting on a threshold or a
    tie (float32 and float64 may round them apart).
    """
    threshold = s.score_threshold
    assert threshold is not None
    candidates = []
    for anchor in range(real.shape[1]):
        best_class, best_score = -1, -math.inf
        for c in class_ids:
            if real[4 + c, anchor] > best_score:
                best_class, best_score = c, float(real[4 + c, anchor])
        if best_score >= threshold:
            cx, cy, w, h = (float(v) for v in real[:4, anchor])
            box = (
                cx * scale[0] - w * scale[0] / 2,
                cy * scale[1] - h * scale[1] / 2,
                cx * scale[0] + w * scale[0] / 2,
                cy * scale[1] + h * scale[1] / 2,
            )
            candidates.append(Kept(anchor, best_score, best_class, box))
    candidates.sort(key=lambda k: -k.score)  # stable: ties keep anchor order
    kept: list[Kept] = []
    compared: list[tuple[Kept, Kept]] = []
    lowered: list[float] = []
    while candidates and len(kept) < s.max_detections:
        best = max(candidates, key=lambda k: k.score)  # the first of equals
        candidates.remove(best)
        kept.append(best)
        remaining = []
        for other in candidates:
            if other.class_id != best.class_id:
                remaining.append(other)
                continue
            compared.append((best, other))
            if s.nested_threshold < 1.0 and reference_nested(best.box, other.box) > s.nested_threshold:
                continue
            overlap = reference_iou(best.box, other.box)
            score = other.score
            if overlap > s.iou_threshold:
                score *= 1.0 - overlap
                lowered.append(score)
            if score >= threshold:
                remaining.append(Kept(other.anchor, score, other.class_id, other.box))
        candidates = remaining
    return kept, compared, lowered


@st.composite
def head_outputs(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A [4 + C, N] output with boxes clustered around a few objects, as a real head produces."""
    classes = draw(st.integers(1, 4))
    anchors = draw(st.integers(0, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    objects = rng.uniform([0.1, 0.1, 0.05, 0.05], [0.9, 0.9, 0.4, 0.4], (max(1, anchors // 10), 4))
    boxes = objects[rng.integers(0, len(objects), anchors)] + rng.normal(0, 0.02, (anchors, 4))
    scores = rng.uniform(0, 1, (anchors, classes)) ** 2
    return np.concatenate([np.clip(boxes, 0, 1), scores], axis=1).T.astype(np.float32), classes


@settings(max_examples=300, deadline=None)
@given(
    output=head_outputs(),
    quantized=st.booleans(),
    coords=st.sampled_from(["normalized", "pixels"]),
    threshold=st.floats(0.05, 0.9),
    iou=st.floats(0.1, 0.9),
    nested=st.one_of(st.just(1.0), st.floats(0.3, 0.99)),
    max_detections=st.integers(1, 20),
    data=st.data(),
)
def test_decode_matches_the_reference(
    output: tuple[np.ndarray, int],
    quantized: bool,
    coords: str,
    threshold: float,
    iou: float,
    nested: float,
    max_detections: int,
    data: st.DataObject,
) -> None:
    real, classes = output
    wanted = sorted(data.draw(st.sets(st.integers(0, classes - 1), min_size=1)))
    scale = (float(INPUT), float(INPUT)) if coords == "normalized" else (1.0, 1.0)
    if coords == "pixels":
        real = real.copy()
        real[:4] *= INPUT
    if quantized:
        tensor = TensorInfo("out", 0, real.shape, np.dtype(np.int8), float(real.max(initial=1.0)) / 255, -128)
        raw = tensor.quantize(real)
        real = (raw.astype(np.float64) + 128) * tensor.scale  # what the model really said
    else:
        tensor = TensorInfo("out", 0, real.shape, np.dtype(np.float32), 0.0, 0)
        raw = real
    s = DetectorSettings(
        score_threshold=threshold, iou_threshold=iou, nested_threshold=nested, max_detections=max_detections
    )

    expected, compared, lowered = reference_decode(real, wanted, scale, s)
    assume(all(abs(reference_iou(a.box, b.box) - iou) > 1e-4 for a, b in compared))
    assume(all(abs(v - threshold) > 1e-4 for v in lowered))
    assume(all(abs(v - float(w)) > 1e-4 for v in lowered for w in real[4:].ravel()))
    assume(all(abs(v - w) > 1e-4 for v, w in itertools.combinations(lowered, 2)))
    assume(all(abs(reference_nested(a.box, b.box) - nested) > 1e-4 for a, b in compared))
    assume(all(abs(float(v) - threshold) > 1e-6 for v in real[4:].ravel()))
    boxes, scores, class_ids = decode(raw, tensor, np.array(wanted, np.intp), scale, s)

    assert [int(c) for c in class_ids] == [k.class_id for k in expected]
    np.testing.assert_allclose(scores, [k.score for k in expected], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(boxes.reshape(-1, 4), np.array([k.box for k in expected]).reshape(-1, 4), atol=1e-3)


def _output(rows: list[list[float]]) -> tuple[np.ndarray, TensorInfo]:
    """Anchors given as [cx, cy, w, h, score per class...] in normalised units."""
    real = np.array(rows, np.float32).T
    return real, TensorInfo("out", 0, real.shape, np.dtype(np.float32), 0.0, 0)


def test_overlapping_boxes_of_one_person_merge_into_the_best() -> None:
    raw, tensor = _output(
        [[0.5, 0.5, 0.2, 0.4, 0.7, 0.0], [0.51, 0.5, 0.2, 0.4, 0.9, 0.0], [0.1, 0.1, 0.1, 0.1, 0.6, 0]]
    )
    boxes, scores, classes = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    assert classes.tolist() == [0, 0]
    np.testing.assert_allclose(boxes[0], [131.2, 96, 195.2, 224], atol=1e-3)


def test_a_box_around_or_inside_a_better_one_is_dropped_though_their_iou_is_low() -> None:
    """A person lying down (wide, flat) and a taller box over them: IoU 0.33, all of the flat box inside."""
    lying, taller = [0.5, 0.8, 0.4, 0.1, 0.9], [0.5, 0.75, 0.4, 0.3, 0.6]
    raw, tensor = _output([lying, taller])
    _, scores, _ = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert scores.tolist() == pytest.approx([0.9])
    raw, tensor = _output([[*taller[:4], 0.9], [*lying[:4], 0.6]])  # the other way round: the inner box goes
    _, scores, _ = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert scores.tolist() == pytest.approx([0.9])
    without_rule = DetectorSettings(score_threshold=0.3, nested_threshold=1.0)
    _, scores, _ = decode(raw, tensor, np.array([0]), (INPUT, INPUT), without_rule)
    assert scores.tolist() == pytest.approx([0.9, 0.6 * (1 - 1 / 3)])  # only lowered by its IoU with the taller box


def test_people_side_by_side_or_one_partly_behind_another_keep_their_boxes() -> None:
    """Two fighters a shoulder apart (a third of each box shared) and a person half hidden behind another."""
    left, right = [0.45, 0.5, 0.2, 0.5, 0.9], [0.58, 0.5, 0.2, 0.5, 0.8]
    behind = [0.68, 0.45, 0.16, 0.4, 0.7]  # half of it lies inside the right one's box (IoU 0.24)
    raw, tensor = _output([left, right, behind])
    _, scores, _ = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_a_person_mostly_behind_another_keeps_a_lowered_score_where_a_second_box_on_one_falls_away() -> None:
    """Soft NMS: a fighter overlapping the front one by IoU 0.5 stays with half their score, a
    second box on the front one (IoU 0.82) drops under the threshold, and lowering one box can
    move it behind a box that scored less before."""
    front = [0.5, 0.5, 0.2, 0.5, 0.95]
    behind = [0.5 + 0.2 / 3, 0.5, 0.2, 0.5, 0.9]  # a third of the width apart: IoU 0.5
    second = [0.51, 0.5, 0.18, 0.5, 0.8]  # on the front one: IoU 0.82
    away = [0.1, 0.2, 0.1, 0.2, 0.5]
    raw, tensor = _output([front, behind, second, away])
    boxes, scores, _ = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.25))
    assert scores.tolist() == pytest.approx([0.95, 0.5, 0.9 * 0.5], abs=1e-5)
    np.testing.assert_allclose(
        boxes[2], [(0.5 + 0.2 / 3 - 0.1) * INPUT, 0.25 * INPUT, (0.5 + 0.2 / 3 + 0.1) * INPUT, 0.75 * INPUT], atol=1e-3
    )
    _, scores, _ = decode(
        raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4, iou_threshold=0.6)
    )
    assert scores.tolist() == pytest.approx([0.95, 0.9, 0.5])  # IoU 0.5 is under a threshold of 0.6


def test_suppression_is_per_class_and_the_class_filter_holds() -> None:
    raw, tensor = _output([[0.5, 0.5, 0.2, 0.4, 0.8, 0.1], [0.5, 0.5, 0.2, 0.4, 0.1, 0.7]])
    _, scores, classes = decode(raw, tensor, np.array([0, 1]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert classes.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.8, 0.7])
    _, _, classes = decode(raw, tensor, np.array([1]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert classes.tolist() == [1]


def test_score_threshold_is_inclusive_and_max_detections_caps() -> None:
    rows = [[0.1 * i + 0.05, 0.5, 0.05, 0.05, 0.4 if i < 5 else 0.39] for i in range(10)]
    raw, tensor = _output(rows)
    _, scores, _ = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert len(scores) == 5
    _, scores, _ = decode(
        raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4, max_detections=3)
    )
    assert len(scores) == 3


def test_empty_output_decodes_to_nothing() -> None:
    raw, tensor = _output([[0.5, 0.5, 0.2, 0.2, 0.1]])
    boxes, scores, classes = decode(raw, tensor, np.array([0]), (INPUT, INPUT), DetectorSettings(score_threshold=0.4))
    assert boxes.shape == (0, 4)
    assert scores.size == 0
    assert classes.size == 0
    keep, kept_scores = nms(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.intp), 0.5, 10, 0.8, 0.4
    )
    assert keep.size == 0
    assert kept_scores.size == 0


def test_letterbox_of_a_landscape_frame() -> None:
    layout = Letterbox.fit(640, 480, 320, 320)
    assert (layout.scale, layout.pad_x, layout.pad_y, layout.width, layout.height) == (0.5, 0, 40, 320, 240)
    mapped = layout.to_frame(np.array([[100, 60, 200, 140], [-10, 0, 330, 330]], np.float32))
    np.testing.assert_allclose(mapped, [[200, 40, 400, 200], [0, 0, 640, 480]])


@given(
    frame=st.tuples(st.integers(16, 1920), st.integers(16, 1080)),
    model=st.tuples(st.integers(32, 640), st.integers(32, 640)),
    box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_boxes_map_back_to_where_they_were_in_the_frame(
    frame: tuple[int, int], model: tuple[int, int], box: tuple[float, float, float, float]
) -> None:
    width, height = frame
    layout = Letterbox.fit(width, height, *model)
    assert layout.width <= model[0]
    assert layout.height <= model[1]
    x1, x2 = sorted((box[0] * width, box[2] * width))
    y1, y2 = sorted((box[1] * height, box[3] * height))
    # where the letterbox puts the frame: scale by the resized size, shift by the padding
    sx, sy = layout.width / width, layout.height / height
    inside = np.array(
        [[x1 * sx + layout.pad_x, y1 * sy + layout.pad_y, x2 * sx + layout.pad_x, y2 * sy + layout.pad_y]]
    )
    back = layout.to_frame(inside.astype(np.float32))[0]
    tolerance = 1.0 / layout.scale  # rounding the resized size to whole pixels
    np.testing.assert_allclose(back, [x1, y1, x2, y2], atol=tolerance + 1e-3)


def test_canvas_holds_the_frame_in_rgb_between_grey_bands() -> None:
    frame = np.zeros((60, 160, 3), np.uint8)
    frame[:, :, 0] = 255  # pure blue in BGR
    canvas = LetterboxCanvas(80, 80)
    layout = canvas.fill(frame)
    assert (layout.pad_x, layout.pad_y, layout.width, layout.height) == (0, 25, 80, 30)
    assert (canvas.rgb[25:55] == [0, 0, 255]).all()
    assert (canvas.rgb[:25] == PAD_VALUE).all()
    assert (canvas.rgb[55:] == PAD_VALUE).all()
    taller = np.full((80, 40, 3), 200, np.uint8)
    layout = canvas.fill(taller)  # a new frame size: the old picture must not show in the new bands
    assert (layout.pad_x, layout.width) == (20, 40)
    assert (canvas.rgb[:, :20] == PAD_VALUE).all()
    assert (canvas.rgb[:, 20:60] == 200).all()


def test_a_frame_of_the_letterbox_size_goes_in_pixel_for_pixel() -> None:
    """A camera stream sized for the model (picamera2's lores) is only turned into RGB, never resampled."""
    frame = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    canvas = LetterboxCanvas(64, 64)
    layout = canvas.fill(frame)
    assert (layout.scale, layout.width, layout.height) == (1.0, 64, 48)
    np.testing.assert_array_equal(canvas.rgb[layout.region], frame[:, :, ::-1])


def test_the_letterbox_encoder_gives_what_a_fresh_letterbox_gives_frame_after_frame() -> None:
    """Bands encoded once per layout, then only the frame's region: the input must equal a full letterbox every time."""
    tensor = TensorInfo("images", 0, (1, 64, 64, 3), np.dtype(np.int8), 1 / 255, -128)
    encoder = LetterboxEncoder(tensor, (0.0, 1.0))
    rng = np.random.default_rng(0)
    for height, width in [(48, 64), (48, 64), (120, 60), (120, 60), (64, 64), (30, 200), (48, 64)]:
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        values, layout = encoder.encode(frame)
        rgb, expected_layout = letterbox(frame, 64, 64)
        assert layout == expected_layout
        np.testing.assert_array_equal(values, PixelEncoder(tensor, (0.0, 1.0)).encode(rgb))
