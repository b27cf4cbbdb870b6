"""Family ``yolov8``: the Ultralytics v8/11 detection head.

Input [1, H, W, 3] RGB scaled to 0..1, letterboxed. Output [1, 4 + C, N]: for each of N anchors
the box centre, width and height (in input pixels, or normalised to 0..1 as Ultralytics' TFLite
export and our toolchain write them: the manifest's ``coords`` says which) and C class scores.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from appliance.errors import ConfigError
from appliance.inference.detector import (
    DEFAULT_PRESENCE,
    Detection,
    Detector,
    DetectorSettings,
    PresenceScores,
    nms,
)
from appliance.inference.imaging import Image, LetterboxEncoder
from appliance.inference.model import TensorInfo, TFLiteModel
from appliance.inference.settings import InferenceSettings
from appliance.inference.slot import LoadedSlot

PIXEL_RANGE = (0.0, 1.0)
COORDS = ("normalized", "pixels")
_HALF = np.array([[-0.5], [-0.5], [0.5], [0.5]], np.float32)


@dataclass(frozen=True)
class PersonClasses:
    persons: tuple[str, ...]
    falls: tuple[str, ...]
    presence: PresenceScores


def _names(slot: LoadedSlot, key: str, labels: list[str]) -> tuple[str, ...]:
    names = slot.param(key, list, "a list of class names from the labels file")
    strays = [name for name in names if name not in labels]
    if strays or not all(isinstance(name, str) for name in names):
        raise slot.error(f"params.{key} names {strays or names}, not classes of the labels file")
    return tuple(names)


def person_classes(slot: LoadedSlot, labels: list[str]) -> PersonClasses:
    """The slot's person and fallen-person classes and presence scores.

    ``person_classes`` (names) and ``fall_classes``, or the single ``person_class`` index older
    toolchains wrote; ``presence_score``, ``confirm_score`` and ``presence_source`` where the
    toolchain chose them, else the appliance's defaults.
    """
    params = slot.entry.params
    if "person_classes" in params:
        persons = _names(slot, "person_classes", labels)
        falls = _names(slot, "fall_classes", labels) if "fall_classes" in params else ()
    else:
        index = slot.param("person_class", int, "the index of the person class in the labels file")
        if not 0 <= index < len(labels):
            raise slot.error(f"params.person_class {index} is not a line of the labels file")
        persons, falls = (labels[index],), ()
    if not persons or any(name not in persons for name in falls):
        raise slot.error("params.fall_classes must be person classes, and there must be one person class at least")
    if "presence_score" not in params:
        return PersonClasses(persons, falls, DEFAULT_PRESENCE)
    score = slot.param("presence_score", float, "a score from 0 to 1")
    confirm = slot.param("confirm_score", float, "a score from 0 to 1")
    source = slot.param("presence_source", str, "a sentence saying how the scores were chosen")
    if not 0.0 < score <= 1.0 or not 0.0 < confirm <= 1.0:
        raise slot.error(f"params.presence_score {score} and confirm_score {confirm} must be scores from 0 to 1")
    return PersonClasses(persons, falls, PresenceScores(score, confirm, f"the detector's manifest: {source}"))


@functools.cache
def least_stored(output: TensorInfo, threshold: float) -> int | None:
    """The least stored score whose real value reaches ``threshold``, for a quantized ``output``.

    Comparing stored values with it picks exactly the anchors that dequantized scores would (the
    values are those of :meth:`TensorInfo.dequantize`), without dequantizing every anchor's score.
    None for float outputs, and when no stored value reaches ``threshold``.
    """
    if not output.quantized:
        return None
    limits = np.iinfo(output.dtype)
    stored = np.arange(limits.min, limits.max + 1).astype(output.dtype)
    reaching = np.flatnonzero(output.dequantize(stored) >= threshold)
    return int(stored[reaching[0]]) if reaching.size else None


def decode(
    raw: npt.NDArray[np.generic],
    output: TensorInfo,
    class_ids: npt.NDArray[np.intp],
    box_scale: tuple[float, float],
    settings: DetectorSettings,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Boxes (x1 y1 x2 y2, input pixels), scores and class ids kept from one raw output [4 + C, N].

    Scores are compared as stored (with the least stored value that reaches the threshold), and
    only the candidates' scores and box rows are dequantized, so beyond one pass over the wanted
    classes the cost follows the candidates.
    """
    threshold = settings.score_threshold
    if threshold is None:
        raise ValueError("decode needs a score threshold: the detector resolves it from the presence score")
    rows = raw[4 + class_ids]  # (k, N), as stored
    # Best class per anchor on the stored values (dequantization is increasing, so they agree);
    # max along the class axis is vectorised where argmax is not, so argmax sees candidates only.
    best = rows.max(axis=0) if len(class_ids) > 1 else rows[0]
    least = least_stored(output, threshold)
    if least is not None:
        anchors = np.flatnonzero(best >= least)
    else:
        anchors = np.flatnonzero(output.dequantize(best) >= threshold)
    scores = output.dequantize(best[anchors])
    centre_and_size = output.dequantize(raw[:4, anchors])  # cx, cy, w, h rows
    sx, sy = box_scale
    # x1 y1 x2 y2 = (cx, cy, cx, cy) -+ (w, h, w, h) / 2, in input pixels; (K, 4) view of (4, K)
    boxes = ((centre_and_size[[0, 1, 0, 1]] + centre_and_size[[2, 3, 2, 3]] * _HALF) * [[sx], [sy], [sx], [sy]]).T
    classes = class_ids[rows[:, anchors].argmax(axis=0)]
    keep, kept_scores = nms(
        boxes,
        scores,
        classes,
        settings.iou_threshold,
        settings.max_detections,
        settings.nested_threshold,
        threshold,
    )
    return boxes[keep], kept_scores, classes[keep]


class Yolov8Detector(Detector):
    def __init__(
        self,
        model: TFLiteModel,
        labels: list[str],
        classes: PersonClasses,
        coords: str,
        settings: DetectorSettings,
    ) -> None:
        self._model = model
        self._input = model.only_input()
        self._output = model.only_output()
        self.labels = tuple(labels)
        self.person_classes = frozenset(self.labels.index(name) for name in classes.persons)
        self.fall_classes = frozenset(self.labels.index(name) for name in classes.falls)
        self.presence = classes.presence
        presence = settings.presence_score if settings.presence_score is not None else classes.presence.score
        threshold = settings.score_threshold if settings.score_threshold is not None else presence
        self.settings = replace(settings, score_threshold=threshold)
        _, height, width, _ = self._input.shape
        self.input_size = (width, height)
        self.box_scale = (float(width), float(height)) if coords == "normalized" else (1.0, 1.0)
        # the person classes, and the objects a person may hold that this model knows
        wanted = settings.labels or (*classes.persons, *(name for name in settings.objects if name in self.labels))
        unknown = [name for name in wanted if name not in self.labels]
        if unknown:
            raise ConfigError(
                f"APPLIANCE_DETECT_LABELS: {', '.join(unknown)} not among the detector's classes "
                f"({', '.join(self.labels[:10])}{', …' if len(self.labels) > 10 else ''})"
            )
        self.class_ids = np.array([self.labels.index(name) for name in wanted], np.intp)
        self._letterbox = LetterboxEncoder(self._input, PIXEL_RANGE)

    @classmethod
    def from_slot(cls, slot: LoadedSlot, settings: InferenceSettings) -> Yolov8Detector:
        model = slot.model("model")
        labels = slot.lines("labels")
        coords = slot.choice("coords", COORDS)
        tensor_in, tensor_out = model.only_input(), model.only_output()
        shape_in, shape_out = tensor_in.shape, tensor_out.shape
        slot.check_shape(tensor_in, model, "[1, H, W, 3]", len(shape_in) == 4 and shape_in[0] == 1 and shape_in[3] == 3)
        slot.check_shape(
            tensor_out,
            model,
            f"[1, 4 + {len(labels)} classes (from the labels file), anchors]",
            len(shape_out) == 3 and shape_out[0] == 1 and shape_out[1] == 4 + len(labels),
        )
        return cls(model, labels, person_classes(slot, labels), coords, settings.detector)

    @property
    def models(self) -> Mapping[str, TFLiteModel]:
        return {"model": self._model}

    @property
    def anchors(self) -> int:
        return self._output.shape[2]

    def detect(self, frame: Image) -> list[Detection]:
        values, layout = self._letterbox.encode(frame)
        self._model.set_raw(self._input, values)
        self._model.invoke()
        boxes, scores, classes = self.decode(self._model.get_raw(self._output)[0])
        boxes = layout.to_frame(boxes)
        return [
            Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), int(c), self.labels[c])
            for b, s, c in zip(boxes, scores, classes, strict=True)
        ]

    def decode(
        self, raw: npt.NDArray[np.generic]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.intp]]:
        """Decode + NMS of one raw output [4 + C, N]; boxes in input pixels."""
        return decode(raw, self._output, self.class_ids, self.box_scale, self.settings)
