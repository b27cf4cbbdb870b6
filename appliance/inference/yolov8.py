"""Family ``yolov8``: the Ultralytics v8/11 detection head.

Input [1, H, W, 3] RGB scaled to 0..1, letterboxed. Output [1, 4 + C, N]: for each of N anchors
the box centre, width and height (in input pixels, or normalised to 0..1 as Ultralytics' TFLite
export and our toolchain write them: the manifest's ``coords`` says which) and C class scores.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from appliance.errors import ConfigError
from appliance.inference.detector import Detection, Detector, DetectorSettings, nms
from appliance.inference.imaging import Image, LetterboxEncoder
from appliance.inference.model import TensorInfo, TFLiteModel
from appliance.inference.settings import InferenceSettings
from appliance.inference.slot import LoadedSlot

PIXEL_RANGE = (0.0, 1.0)
COORDS = ("normalized", "pixels")
_HALF = np.array([[-0.5], [-0.5], [0.5], [0.5]], np.float32)


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
    rows = raw[4 + class_ids]  # (k, N), as stored
    # Best class per anchor on the stored values (dequantization is increasing, so they agree);
    # max along the class axis is vectorised where argmax is not, so argmax sees candidates only.
    best = rows.max(axis=0) if len(class_ids) > 1 else rows[0]
    least = least_stored(output, settings.score_threshold)
    if least is not None:
        anchors = np.flatnonzero(best >= least)
    else:
        anchors = np.flatnonzero(output.dequantize(best) >= settings.score_threshold)
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
        settings.score_threshold,
    )
    return boxes[keep], kept_scores, classes[keep]


class Yolov8Detector(Detector):
    def __init__(
        self,
        model: TFLiteModel,
        labels: list[str],
        person_class: int,
        coords: str,
        settings: DetectorSettings,
    ) -> None:
        self._model = model
        self._input = model.only_input()
        self._output = model.only_output()
        self.labels = tuple(labels)
        self.person_class = person_class
        self.settings = settings
        _, height, width, _ = self._input.shape
        self.input_size = (width, height)
        self.box_scale = (float(width), float(height)) if coords == "normalized" else (1.0, 1.0)
        unknown = [name for name in settings.labels if name not in self.labels]
        if unknown:
            raise ConfigError(
                f"APPLIANCE_DETECT_LABELS: {', '.join(unknown)} not among the detector's classes "
                f"({', '.join(self.labels[:10])}{', …' if len(self.labels) > 10 else ''})"
            )
        self.class_ids = np.array([self.labels.index(name) for name in settings.labels], np.intp)
        self._letterbox = LetterboxEncoder(self._input, PIXEL_RANGE)

    @classmethod
    def from_slot(cls, slot: LoadedSlot, settings: InferenceSettings) -> Yolov8Detector:
        model = slot.model("model")
        labels = slot.lines("labels")
        person_class = slot.param("person_class", int, "the index of the person class in the labels file")
        coords = slot.choice("coords", COORDS)
        if not 0 <= person_class < len(labels):
            raise slot.error(f"params.person_class {person_class} is not a line of the labels file")
        tensor_in, tensor_out = model.only_input(), model.only_output()
        shape_in, shape_out = tensor_in.shape, tensor_out.shape
        slot.check_shape(tensor_in, model, "[1, H, W, 3]", len(shape_in) == 4 and shape_in[0] == 1 and shape_in[3] == 3)
        slot.check_shape(
            tensor_out,
            model,
            f"[1, 4 + {len(labels)} classes (from the labels file), anchors]",
            len(shape_out) == 3 and shape_out[0] == 1 and shape_out[1] == 4 + len(labels),
        )
        return cls(model, labels, person_class, coords, settings.detector)

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
