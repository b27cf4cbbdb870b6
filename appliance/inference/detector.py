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
class DetectorSettings:
    labels: tuple[str, ...] = ("person",)  # classes to report, by label name
    score_threshold: float = 0.4
    iou_threshold: float = 0.45
    nested_threshold: float = 0.8  # share of the smaller box inside the other; 1.0 turns the rule off
    max_detections: int = 100


class Detector(ABC):
    """Finds objects in a frame. One subclass per model family."""

    labels: tuple[str, ...]
    person_class: int
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
) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept by greedy per-class non-maximum suppression, best score first.

    A box is dropped when it overlaps a better-scored box of the same class by IoU above
    ``iou_threshold``, or when their intersection covers more than ``nested_threshold`` of the
    smaller of the two: a box inside another, or around it, is mostly one object boxed twice (a
    person lying down and a taller box over them) even where IoU is low. 1.0 keeps nested boxes.
    Classes are kept apart by shifting each class's boxes to its own region, so one pass serves all classes.
    """
    order = np.argsort(-scores, kind="stable")
    if classes.size and classes.max() > 0:
        offset = (classes.astype(np.float32) * (float(np.abs(boxes).max()) * 2.0 + 1.0))[:, None]
        boxes = boxes + offset
    overlap = _Overlap(boxes)
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[overlap.apart(best, rest, iou_threshold, nested_threshold)]
    return np.asarray(keep, dtype=np.intp)


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

    def iou(self, one: int | np.intp, others: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        inter = self.intersection(one, others)
        union = self.areas[one] + self.areas[others] - inter
        result: npt.NDArray[np.float32] = inter / np.maximum(union, np.float32(1e-12))
        return result

    def apart(
        self, one: int | np.intp, others: npt.NDArray[np.intp], iou_threshold: float, nested_threshold: float
    ) -> npt.NDArray[np.bool_]:
        """Which of ``others`` NMS keeps beside ``one``: IoU at most ``iou_threshold`` and at most
        ``nested_threshold`` of the smaller box inside the other, compared without dividing."""
        inter = self.intersection(one, others)
        areas = self.areas[others]
        bound = np.float32(iou_threshold) * (self.areas[one] + areas - inter)
        if nested_threshold < 1.0:
            bound = np.minimum(bound, np.float32(nested_threshold) * np.minimum(self.areas[one], areas))
        result: npt.NDArray[np.bool_] = inter <= bound
        return result
