"""The detector slot: its result type, its contract, and non-maximum suppression."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from appliance.inference.imaging import Box, Image
from appliance.inference.model import TFLiteModel


@dataclass(frozen=True, slots=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in frame pixels
    score: float
    class_id: int
    label: str

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class PresenceScores:
    """The detector scores that make a person present and keep one present: they belong to the model
    (a real YOLOv8s scores real people 0.45 to 0.65 where the synthetic detector scores drawn ones 0.9)."""

    score: float  # counts a person and keeps one present (Frigate's min_score)
    confirm: float  # makes a person present (Frigate's threshold)
    source: str  # where the values came from, for `appliance check`


# For a manifest that gives none (older toolchains): the scores the synthetic reference detector was
# tuned with. The toolchain's own choice never goes above them.
DEFAULT_PRESENCE = PresenceScores(0.5, 0.7, "the appliance's defaults (the manifest names none)")


@dataclass(frozen=True)
class DetectorSettings:
    labels: tuple[str, ...] = ()  # classes to report, by label name; empty: the person classes and ``objects``
    objects: tuple[str, ...] = ()  # objects of concern to report too where the model has them (knife, bag, ...)
    score_threshold: float | None = None  # None: the presence score in force (a box below it counts for nothing)
    presence_score: float | None = None  # the configured presence score, over the model's own
    iou_threshold: float = 0.3  # IoU with a better box above which a score is lowered (soft NMS)
    nested_threshold: float = 0.8  # share of the smaller box inside the other; 1.0 turns the rule off
    max_detections: int = 100


class Detector(ABC):
    """Finds objects in a frame. One subclass per model family."""

    labels: tuple[str, ...]
    person_classes: frozenset[int]  # every class that is a person (upright, fallen, ...)
    fall_classes: frozenset[int]  # the person classes that mean someone has fallen
    presence: PresenceScores
    input_size: tuple[int, int]  # (width, height) the frame is letterboxed into: a camera can deliver it so

    @property
    @abstractmethod
    def models(self) -> Mapping[str, TFLiteModel]:
        """The interpreters this detector runs, by role."""

    @abstractmethod
    def detect(self, frame: Image) -> list[Detection]:
        """Boxes of the configured classes in ``frame`` (BGR), best first."""


def nms(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    classes: npt.NDArray[np.intp],
    iou_threshold: float,
    max_out: int,
    nested_threshold: float,
    least: float,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """The boxes kept by greedy per-class soft non-maximum suppression (linear Soft-NMS, Bodla et
    al. 2017), best first, and their scores after it.

    Each time the best box is taken, a box of its class that overlaps it by IoU above
    ``iou_threshold`` keeps its place with its score times (1 - IoU), and is dropped once that is
    under ``least``. A second box on the same person overlaps much and falls away; a person half
    behind another overlaps less and stays, with a lower score, where hard NMS would have dropped
    them. A box whose intersection with the taken one covers more than ``nested_threshold`` of the
    smaller of the two is dropped outright: a box inside another, or around it, is mostly one object
    boxed twice (a person lying down and a taller box over them) even where IoU is low. 1.0 keeps
    nested boxes. Classes are kept apart by shifting each class's boxes to its own region, so one
    pass serves all classes.
    """
    order = np.argsort(-scores, kind="stable")
    scores = scores.astype(np.float32, copy=True)
    if classes.size and classes.max() > 0:
        offset = (classes.astype(np.float32) * (float(np.abs(boxes).max()) * 2.0 + 1.0))[:, None]
        boxes = boxes + offset
    overlap = _Overlap(boxes)
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        iou, nested = overlap.compare(best, rest, nested_threshold)
        lowered = iou > iou_threshold
        order = rest[~nested]
        if lowered.any():
            scores[rest[lowered]] *= 1.0 - iou[lowered]
            order = order[scores[order] >= least]
            # best first again; a stable sort keeps equal scores in the order they had
            order = order[np.argsort(-scores[order], kind="stable")]
    kept = np.asarray(keep, dtype=np.intp)
    return kept, scores[kept]


def iou_one_to_many(box: npt.NDArray[np.float32], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Intersection over union of ``box`` (4,) with each of ``boxes`` (N, 4), all x1 y1 x2 y2; 0 for empty unions."""
    overlap = _Overlap(np.concatenate([np.asarray(box, np.float32)[None], np.asarray(boxes, np.float32)]))
    return overlap.iou(0, np.arange(1, len(boxes) + 1))


class _Overlap:
    """IoU between boxes of one set; columns and areas are taken once, as NMS asks many times.

    Small-array numpy calls cost microseconds each, so this sticks to the cheap ones
    (``np.clip`` and ``np.divide(where=...)`` cost several times more per call).
    """

    def __init__(self, boxes: npt.NDArray[np.float32]) -> None:
        self.x1, self.y1, self.x2, self.y2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
        self.areas = np.maximum(self.x2 - self.x1, 0) * np.maximum(self.y2 - self.y1, 0)

    def intersection(self, one: int | np.intp, others: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        width = np.minimum(self.x2[one], self.x2[others]) - np.maximum(self.x1[one], self.x1[others])
        height = np.minimum(self.y2[one], self.y2[others]) - np.maximum(self.y1[one], self.y1[others])
        result: npt.NDArray[np.float32] = np.maximum(width, 0) * np.maximum(height, 0)
        return result

    def iou(
        self, one: int | np.intp, others: npt.NDArray[np.intp], inter: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        inter = self.intersection(one, others) if inter is None else inter
        union = self.areas[one] + self.areas[others] - inter
        result: npt.NDArray[np.float32] = inter / np.maximum(union, np.float32(1e-12))
        return result

    def compare(
        self, one: int | np.intp, others: npt.NDArray[np.intp], nested_threshold: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """IoU of ``one`` with each of ``others``, and which of them share more than
        ``nested_threshold`` of the smaller box with it (none when the threshold is 1.0)."""
        inter = self.intersection(one, others)
        if nested_threshold < 1.0:
            smaller = np.minimum(self.areas[one], self.areas[others])
            nested: npt.NDArray[np.bool_] = inter > np.float32(nested_threshold) * smaller
        else:
            nested = np.zeros(len(others), np.bool_)
        return self.iou(one, others, inter), nested
