"""Family ``mobilenetv2``: an image classifier on square person crops.

Input [1, S, S, 3] RGB scaled to -1..1 (MobileNetV2's own preprocessing), a square crop around
the person widened by the manifest's ``crop_margin``. Output [1, C]: probabilities, or logits
when the manifest's ``output`` is ``logits`` (softmax is applied here then).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from appliance.inference.classifier import Classification, Classifier
from appliance.inference.imaging import Box, Image, PixelEncoder, square_crop
from appliance.inference.model import TFLiteModel
from appliance.inference.settings import InferenceSettings
from appliance.inference.slot import LoadedSlot

PIXEL_RANGE = (-1.0, 1.0)
OUTPUTS = ("probabilities", "logits")


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    shifted = np.exp(logits - logits.max())
    result: npt.NDArray[np.float32] = shifted / shifted.sum()
    return result


class MobileNetV2Classifier(Classifier):
    def __init__(self, model: TFLiteModel, labels: list[str], crop_margin: float, logits: bool) -> None:
        self._model = model
        self._input = model.only_input()
        self._output = model.only_output()
        self.labels = tuple(labels)
        self.crop_margin = crop_margin
        self.logits = logits
        self.input_size = self._input.shape[1]
        self._encoder = PixelEncoder(self._input, PIXEL_RANGE)

    @classmethod
    def from_slot(cls, slot: LoadedSlot, settings: InferenceSettings) -> MobileNetV2Classifier:
        model = slot.model("model")
        labels = slot.lines("labels")
        margin = slot.param("crop_margin", float, "the crop margin, a number from 0 to 1")
        output = slot.choice("output", OUTPUTS)
        if not 0.0 <= margin <= 1.0:
            raise slot.error(f"params.crop_margin is {margin}, expected a number from 0 to 1")
        tensor_in, tensor_out = model.only_input(), model.only_output()
        shape_in = tensor_in.shape
        square = len(shape_in) == 4 and shape_in[0] == 1 and shape_in[1] == shape_in[2] and shape_in[3] == 3
        slot.check_shape(tensor_in, model, "[1, S, S, 3]", square)
        slot.check_shape(
            tensor_out,
            model,
            f"[1, {len(labels)}] (one score per line of the labels file)",
            tensor_out.shape == (1, len(labels)),
        )
        return cls(model, labels, margin, output == "logits")

    @property
    def models(self) -> Mapping[str, TFLiteModel]:
        return {"model": self._model}

    def classify(self, frame: Image, box: Box) -> Classification:
        crop = square_crop(frame, box, self.crop_margin, self.input_size)
        self._model.set_raw(self._input, self._encoder.encode(crop))
        self._model.invoke()
        scores = self._output.dequantize(self._model.get_raw(self._output))[0]
        if self.logits:
            scores = softmax(scores)
        return Classification({label: float(score) for label, score in zip(self.labels, scores, strict=True)})
