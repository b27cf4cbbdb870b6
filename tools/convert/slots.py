"""What conversion needs to know per slot: files, family parameters, calibration inputs, validation.

Calibration inputs are made with the appliance's own preprocessing (letterbox, square crop,
stretch and pixel ranges of each family), so the int8 model is calibrated on what it will see.
Validation runs the float and the int8 model through the appliance's own family classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from appliance.inference import attention_gru, mobilenetv2, yolov8
from appliance.inference.attention_gru import AttentionGruCaptioner
from appliance.inference.captioner import CaptionerSettings, beam_search, log_softmax
from appliance.inference.classifier import Classifier
from appliance.inference.detector import Detector, DetectorSettings, iou_one_to_many
from appliance.inference.imaging import Image, letterbox, pixel_values, square_crop, stretch
from appliance.inference.loader import CAPTIONERS, CLASSIFIERS, DETECTORS, Family
from appliance.inference.model import FloatArray, TFLiteModel
from appliance.inference.settings import InferenceSettings
from appliance.inference.slot import read_lines
from tools.convert import ConvertError
from tools.convert.progress import progress
from tools.convert.tflite import Sample

COARSE_SCORE_STEP = 0.02  # coarser than this, int8 scores cannot express a threshold like 0.4 or 0.45


@dataclass(frozen=True)
class Agreement:
    """How closely the int8 model follows the float one on held-out frames."""

    metrics: dict[str, Any]
    summary: str
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (float, int8) score of the same thing
    pairs_label: str = "score"


def _whole(frame: Image) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(frame.shape[1]), float(frame.shape[0]))


class SlotConversion(ABC):
    slot: ClassVar[str]
    family: ClassVar[str]
    registry: ClassVar[Mapping[str, Family[Any]]]
    model_files: ClassVar[dict[str, str]]  # model role -> file name written
    data_files: ClassVar[dict[str, str]]  # data role -> file name written

    def validation_settings(self, data: Mapping[str, Path], threads: int) -> InferenceSettings:
        """How the appliance's family classes run while float and int8 are compared: greedy captions of
        the frame alone."""
        return InferenceSettings(threads=threads, captioner=CaptionerSettings(beam_width=1, mirror=False))

    @abstractmethod
    def params(
        self, float_models: Mapping[str, TFLiteModel], data: Mapping[str, Path], frames: list[Image]
    ) -> dict[str, Any]:
        """The family parameters for the manifest (may inspect the float model's outputs)."""

    @abstractmethod
    def samples(
        self,
        role: str,
        float_models: Mapping[str, TFLiteModel],
        frames: list[Image],
        params: Mapping[str, Any],
        data: Mapping[str, Path],
    ) -> list[Sample]:
        """Representative real-valued inputs of model ``role``, keyed by input name."""

    @abstractmethod
    def agreement(self, reference: Any, quantized: Any, frames: list[Image]) -> Agreement:
        """Compare the float and the int8 slot (both built by the appliance) on ``frames``."""


def _image_samples(model: TFLiteModel, images: list[FloatArray]) -> list[Sample]:
    name = model.only_input().name
    return [{name: image[None]} for image in images]


class SingleImageConversion(SlotConversion):
    """A slot with one model whose one input is an image made from the frame by the family."""

    @abstractmethod
    def _inputs(self, model: TFLiteModel, frames: list[Image]) -> list[FloatArray]:
        """The model's real-valued input for each frame, made as the appliance makes it."""

    def _float_outputs(self, float_models: Mapping[str, TFLiteModel], frames: list[Image]) -> list[FloatArray]:
        """The float model's output on a few frames, to tell what the model emits."""
        model = float_models["model"]
        name = model.only_output().name
        return [model.run({model.only_input().name: x[None]})[name][0] for x in self._inputs(model, frames[:8])]

    def samples(
        self,
        role: str,
        float_models: Mapping[str, TFLiteModel],
        frames: list[Image],
        params: Mapping[str, Any],
        data: Mapping[str, Path],
    ) -> list[Sample]:
        model = float_models[role]
        return _image_samples(model, self._inputs(model, frames))


class DetectorConversion(SingleImageConversion):
    slot = "detector"
    family = "yolov8"
    registry = DETECTORS
    model_files: ClassVar[dict[str, str]] = {"model": "detector.tflite"}
    data_files: ClassVar[dict[str, str]] = {"labels": "detector_labels.txt"}

    def __init__(self, person_label: str, coords: str) -> None:
        self.person_label = person_label
        self.coords = coords

    def validation_settings(self, data: Mapping[str, Path], threads: int) -> InferenceSettings:
        """Every class, down to a low score, so that disagreements near the threshold show."""
        detector = DetectorSettings(labels=tuple(read_lines(data["labels"])), score_threshold=0.25)
        return InferenceSettings(threads=threads, detector=detector)

    def _inputs(self, model: TFLiteModel, frames: list[Image]) -> list[FloatArray]:
        _, height, width, _ = model.only_input().shape
        return [pixel_values(letterbox(frame, width, height)[0], yolov8.PIXEL_RANGE) for frame in frames]

    def params(
        self, float_models: Mapping[str, TFLiteModel], data: Mapping[str, Path], frames: list[Image]
    ) -> dict[str, Any]:
        labels = read_lines(data["labels"])
        if self.person_label not in labels:
            raise ConvertError(
                f"{data['labels']}: no {self.person_label!r} line; name the person class with --person-label"
            )
        coords = self.coords
        if coords == "auto":
            # Normalised boxes stay within about 0..1; pixel boxes reach the input size.
            largest = max(float(np.abs(output[:4]).max()) for output in self._float_outputs(float_models, frames))
            coords = "normalized" if largest <= 2.0 else "pixels"
        return {"person_class": labels.index(self.person_label), "coords": coords}

    def agreement(self, reference: Detector, quantized: Detector, frames: list[Image]) -> Agreement:
        found_float = found_int8 = 0
        ious: list[float] = []
        pairs: list[tuple[float, float]] = []
        for frame in progress(iterable=frames, desc="validating detector"):
            a, b = reference.detect(frame), quantized.detect(frame)
            found_float, found_int8 = found_float + len(a), found_int8 + len(b)
            unmatched = list(b)
            for detection in a:  # best float box first, each takes its best same-class int8 box
                same = [d for d in unmatched if d.class_id == detection.class_id]
                if not same:
                    continue
                overlaps = iou_one_to_many(np.array(detection.box), np.array([d.box for d in same]))
                best = int(overlaps.argmax())
                if overlaps[best] >= 0.5:
                    ious.append(float(overlaps[best]))
                    pairs.append((detection.score, same[best].score))
                    unmatched.remove(same[best])
        matched = len(ious) / found_float if found_float else 1.0
        mean_iou = float(np.mean(ious)) if ious else 0.0
        # Boxes and scores share one output tensor, hence one quantization step.
        score_step = quantized.models["model"].only_output().scale
        metrics = {
            "frames": len(frames),
            "float_boxes": found_float,
            "int8_boxes": found_int8,
            "matched_boxes": len(ious),
            "matched_rate": matched,
            "mean_iou": mean_iou,
            "score_step": score_step,
        }
        summary = (
            f"detector: {len(ious)} of {found_float} float boxes matched by an int8 box ({matched:.1%}, IoU >= 0.5), "
            f"mean IoU {mean_iou:.3f}; int8 found {found_int8} boxes on {len(frames)} held-out frames"
        )
        if score_step > COARSE_SCORE_STEP:
            summary += (
                f"\nwarning: the int8 output moves in steps of {score_step:.3f}, so scores can only be multiples "
                "of it: the boxes are in input pixels and share the tensor with the scores; normalise them to 0..1 "
                "inside the model, as Ultralytics' TFLite export does"
            )
        return Agreement(metrics, summary, pairs, "score of a matched box")


class ClassifierConversion(SingleImageConversion):
    slot = "classifier"
    family = "mobilenetv2"
    registry = CLASSIFIERS
    model_files: ClassVar[dict[str, str]] = {"model": "classifier.tflite"}
    data_files: ClassVar[dict[str, str]] = {"labels": "classifier_labels.txt"}

    def __init__(self, crop_margin: float, output: str) -> None:
        self.crop_margin = crop_margin
        self.output = output

    def _inputs(self, model: TFLiteModel, frames: list[Image]) -> list[FloatArray]:
        # Calibration images are person crops already: the whole image is the box.
        size = model.only_input().shape[1]
        return [pixel_values(square_crop(f, _whole(f), 0.0, size), mobilenetv2.PIXEL_RANGE) for f in frames]

    def params(
        self, float_models: Mapping[str, TFLiteModel], data: Mapping[str, Path], frames: list[Image]
    ) -> dict[str, Any]:
        output = self.output
        if output == "auto":
            scores = self._float_outputs(float_models, frames)
            sums_to_one = all(s.min() >= 0.0 and abs(float(s.sum()) - 1.0) < 1e-3 for s in scores)
            output = "probabilities" if sums_to_one else "logits"
        return {"crop_margin": self.crop_margin, "output": output}

    def agreement(self, reference: Classifier, quantized: Classifier, frames: list[Image]) -> Agreement:
        agree, largest = 0, 0.0
        pairs: list[tuple[float, float]] = []
        for frame in progress(iterable=frames, desc="validating classifier"):
            a, b = reference.classify(frame, _whole(frame)), quantized.classify(frame, _whole(frame))
            agree += a.top[0] == b.top[0]
            pairs.append((a.top[1], b.scores[a.top[0]]))
            largest = max(largest, *(abs(a.scores[k] - b.scores[k]) for k in a.scores))
        rate = agree / len(frames)
        metrics = {"frames": len(frames), "top1_agreement": rate, "max_score_difference": largest}
        summary = (
            f"classifier: top-1 agreement {rate:.1%} ({agree} of {len(frames)} held-out crops), "
            f"largest score difference {largest:.3f}"
        )
        return Agreement(metrics, summary, pairs, "score of the float model's top label")


class CaptionerConversion(SlotConversion):
    slot = "captioner"
    family = "attention-gru"
    registry = CAPTIONERS
    model_files: ClassVar[dict[str, str]] = {
        "encoder": "captioner_encoder.tflite",
        "decoder": "captioner_decoder.tflite",
    }
    data_files: ClassVar[dict[str, str]] = {"vocab": "captioner_vocab.txt"}
    # Calibration follows a few hypotheses per frame, not only the greedy one, to see more states.
    CALIBRATION_BEAM = 3

    def __init__(self, start_token: str, end_token: str, max_length: int) -> None:
        self.start_token, self.end_token, self.max_length = start_token, end_token, max_length

    def params(
        self, float_models: Mapping[str, TFLiteModel], data: Mapping[str, Path], frames: list[Image]
    ) -> dict[str, Any]:
        vocabulary = read_lines(data["vocab"])
        for option, token in (("--start-token", self.start_token), ("--end-token", self.end_token)):
            if token not in vocabulary:
                raise ConvertError(f"{data['vocab']}: no {token!r} line; name it with {option}")
        return {"start_token": self.start_token, "end_token": self.end_token, "max_length": self.max_length}

    def _features(self, encoder: TFLiteModel, frame: Image) -> FloatArray:
        _, height, width, _ = encoder.only_input().shape
        image = pixel_values(stretch(frame, width, height), attention_gru.PIXEL_RANGE)
        return encoder.run({encoder.only_input().name: image[None]})[encoder.only_output().name]

    def samples(
        self,
        role: str,
        float_models: Mapping[str, TFLiteModel],
        frames: list[Image],
        params: Mapping[str, Any],
        data: Mapping[str, Path],
    ) -> list[Sample]:
        encoder = float_models["encoder"]
        if role == "encoder":
            _, height, width, _ = encoder.only_input().shape
            images = [pixel_values(stretch(f, width, height), attention_gru.PIXEL_RANGE) for f in frames]
            return _image_samples(encoder, images)
        # The decoder is calibrated on the (features, token, hidden) it meets while the float
        # model captions the calibration frames.
        decoder = float_models["decoder"]
        vocabulary = read_lines(data["vocab"])
        token_shape = decoder.inputs["token"].shape
        recorded: list[Sample] = []
        for frame in progress(iterable=frames, desc="recording decoder steps"):
            features = self._features(encoder, frame)

            def step(token: int, hidden: FloatArray, features: FloatArray = features) -> tuple[FloatArray, FloatArray]:
                sample = {"features": features, "token": np.full(token_shape, token, np.int32), "hidden": hidden}
                recorded.append(sample)
                out = decoder.run(sample)
                return log_softmax(out["logits"][0]), out["new_hidden"]

            hidden = np.zeros(decoder.inputs["hidden"].shape, np.float32)
            start, end = vocabulary.index(params["start_token"]), vocabulary.index(params["end_token"])
            beam_search(step, hidden, start, end, params["max_length"], self.CALIBRATION_BEAM, 0.7)
        return recorded

    def agreement(
        self, reference: AttentionGruCaptioner, quantized: AttentionGruCaptioner, frames: list[Image]
    ) -> Agreement:
        same_tokens = positions = same_captions = 0
        examples: list[dict[str, str]] = []
        pairs: list[tuple[float, float]] = []
        for frame in progress(iterable=frames, desc="validating captioner"):
            a, b = reference.caption(frame), quantized.caption(frame)
            positions += max(len(a.tokens), len(b.tokens))
            same_tokens += sum(x == y for x, y in zip(a.tokens, b.tokens, strict=False))
            same_captions += a.tokens == b.tokens
            pairs.append((a.mean_logprob, b.mean_logprob))
            if len(examples) < 5:
                examples.append({"float": a.text, "int8": b.text})
        token_rate = same_tokens / positions if positions else 1.0
        caption_rate = same_captions / len(frames)
        metrics = {
            "frames": len(frames),
            "identical_token_rate": token_rate,
            "identical_caption_rate": caption_rate,
            "examples": examples,
        }
        summary = (
            f"captioner: identical tokens {token_rate:.1%}, identical captions {caption_rate:.1%} "
            f"({same_captions} of {len(frames)} held-out frames, greedy decoding)"
        )
        return Agreement(metrics, summary, pairs, "mean log-probability per token")
