"""What conversion needs to know per slot: files, family parameters, calibration inputs, validation.

Calibration inputs are made with the appliance's own preprocessing (letterbox, square crop,
stretch and pixel ranges of each family), so the int8 model is calibrated on what it will see.
Validation runs the float and the int8 model through the appliance's own family classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from appliance.inference import attention_gru, mobilenetv2, yolov8
from appliance.inference.attention_gru import AttentionGruCaptioner
from appliance.inference.captioner import CaptionerSettings, beam_search, log_softmax
from appliance.inference.classifier import Classifier
from appliance.inference.detector import (
    DEFAULT_PRESENCE,
    Detection,
    Detector,
    DetectorSettings,
    PresenceScores,
    iou_one_to_many,
)
from appliance.inference.imaging import Image, letterbox, pixel_values, square_crop, stretch
from appliance.inference.loader import CAPTIONERS, CLASSIFIERS, DETECTORS, Family
from appliance.inference.model import FloatArray, TFLiteModel
from appliance.inference.runtime import make_interpreter
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


class ReferenceDetector(Protocol):
    """Detects on a frame as the model's own source does (the export at its size), for comparison."""

    size: tuple[int, int]

    def detect(self, frame: Image) -> list[Detection]: ...


PRESENCE_LEAST_BOXES = 20  # fewer person boxes on the calibration frames than this tell nothing
CANDIDATE_SCORE = 0.25  # boxes from here up are candidates: the calibration's evidence, and what validation compares


def _counts(per_frame: list[list[float]], score: float) -> float:
    return float(np.mean([sum(s >= score for s in frame) for frame in per_frame]))


PRESENCE_MARGIN = 0.05  # the confirm score is at least this much above the presence score


def presence_scores(per_frame: list[list[float]], source_people: list[int] | None) -> PresenceScores:
    """The presence and confirm scores for a detector, from its person boxes on the calibration frames
    (``per_frame``: the scores of each frame's person boxes from CANDIDATE_SCORE up).

    The calibration frames are the watched scene with people in it. With the model's own source at
    hand (``source_people``: the people the export counts on the same frames at its own size, at
    the appliance's default 0.5), the presence score is the one at which this model counts as many
    people a frame: a smaller input scores the same people lower, and close together (at 416x320
    the YOLOv8s's boxes on vtest.avi have quartiles 0.28 / 0.35 / 0.42). The confirm score is then
    PRESENCE_MARGIN above it: a still picture scored like a person is kept out by the motion rule,
    not by the score, and the margin keeps a box that wavers about the presence score from starting
    an event. Without a source, the presence score is the median of the person boxes and the
    confirm score their 75th percentile (a trained detector scores its people high and its clutter
    low, and the confirm score then lies between them). Both stay within CANDIDATE_SCORE and the
    appliance's defaults (0.5 / 0.7, Frigate's min_score and threshold, which the synthetic
    detector was tuned with).
    """
    scores = [score for frame in per_frame for score in frame]
    if len(scores) < PRESENCE_LEAST_BOXES:
        return replace(
            DEFAULT_PRESENCE,
            source=f"defaults: {len(scores)} person boxes on {len(per_frame)} calibration frames say too little",
        )
    median, upper = (float(v) for v in np.percentile(scores, [50, 75]))
    grid = np.round(np.arange(CANDIDATE_SCORE, DEFAULT_PRESENCE.score + 0.001, 0.01), 2)
    if source_people is not None:
        wanted = float(np.mean(source_people))
        score = float(grid[int(np.argmin([abs(_counts(per_frame, float(g)) - wanted) for g in grid]))])
        confirm = round(score + PRESENCE_MARGIN, 2)
        source = (
            f"calibration: presence {score} counts {_counts(per_frame, score):.2f} people a frame on "
            f"{len(per_frame)} frames, as the export at its own size does at {DEFAULT_PRESENCE.score} ({wanted:.2f}); "
            f"confirm {PRESENCE_MARGIN} above it"
        )
    else:
        score = round(min(DEFAULT_PRESENCE.score, max(CANDIDATE_SCORE, median)), 2)
        confirm = round(min(DEFAULT_PRESENCE.confirm, max(score + PRESENCE_MARGIN, upper)), 2)
        source = (
            f"calibration: the median ({median:.2f}) and 75th percentile ({upper:.2f}) of {len(scores)} person boxes "
            f"on {len(per_frame)} frames, kept within {CANDIDATE_SCORE} and the defaults"
        )
    return PresenceScores(score, confirm, source)


_PASSING = {"QUANTIZE", "CONCATENATION", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE"}  # ops that only requantize


def score_step_near_half(path: Path) -> float | None:
    """How far apart the scores an int8 detector can output lie between 0.4 and 0.6: the largest gap.

    The scores are a sigmoid of int8 class logits, requantized on the way to the output tensor.
    Every stored logit value is followed through that chain, as TFLite computes it (the sigmoid's
    output step 1/256, then each requantization), and the reachable scores near 0.5 compared. None
    for a float model or when no sigmoid feeds the output.
    """
    interpreter = make_interpreter(str(path), 1)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    made_by = {out: op for op in interpreter._get_ops_details() for out in op["outputs"]}
    output = interpreter.get_output_details()[0]["index"]

    def logistic_path(tensor: int) -> list[int] | None:  # the tensors from a sigmoid's input to ``tensor``
        op = made_by.get(tensor)
        if op is None:
            return None
        if op["op_name"] == "LOGISTIC":
            return [op["inputs"][0], tensor]
        if op["op_name"] in _PASSING:
            for source in op["inputs"]:
                found = logistic_path(source) if source >= 0 else None
                if found is not None:
                    return [*found, tensor]
        return None

    def coarsest_before(tensor: int) -> float:  # the logits' step: the coarsest scale back to the op computing them
        op = made_by.get(tensor)
        scale = float(details[tensor]["quantization"][0])
        if op is None or op["op_name"] not in _PASSING | {"MINIMUM", "MAXIMUM"}:
            return scale
        return max([scale] + [coarsest_before(source) for source in op["inputs"][:1] if source >= 0])

    chain = logistic_path(output)
    if chain is None or details[chain[0]]["quantization"][0] == 0.0:
        return None
    low, high = np.iinfo(np.int8).min, np.iinfo(np.int8).max
    zero = details[chain[0]]["quantization"][1]
    logits = coarsest_before(chain[0]) * np.arange(low - zero, high - zero + 1)
    real = 1.0 / (1.0 + np.exp(-logits))
    for tensor in chain[1:]:
        scale, zero = details[tensor]["quantization"]
        real = (np.clip(np.round(real / scale) + zero, low, high) - zero) * scale
    near = np.unique(real[(real >= 0.4) & (real <= 0.6)])
    return float(np.diff(near).max()) if near.size > 1 else None


def _match(found: list[Detection], wanted: list[Detection]) -> list[tuple[Detection, Detection]]:
    """Pairs (wanted, found) of the same class at IoU >= 0.5, best wanted box first, each found box once."""
    unmatched, pairs = list(found), []
    for detection in wanted:
        same = [d for d in unmatched if d.class_id == detection.class_id]
        if not same:
            continue
        overlaps = iou_one_to_many(np.array(detection.box), np.array([d.box for d in same]))
        best = int(overlaps.argmax())
        if overlaps[best] >= 0.5:
            pairs.append((detection, same[best]))
            unmatched.remove(same[best])
    return pairs


class DetectorConversion(SingleImageConversion):
    slot = "detector"
    family = "yolov8"
    registry = DETECTORS
    model_files: ClassVar[dict[str, str]] = {"model": "detector.tflite"}
    data_files: ClassVar[dict[str, str]] = {"labels": "detector_labels.txt"}

    def __init__(
        self,
        persons: tuple[str, ...],
        falls: tuple[str, ...],
        coords: str,
        reference: ReferenceDetector | None = None,
    ) -> None:
        self.persons, self.falls = persons, falls
        self.coords = coords
        self.reference = reference  # the source model, when it can run here: compared with float and int8
        self.presence = DEFAULT_PRESENCE

    def validation_settings(self, data: Mapping[str, Path], threads: int) -> InferenceSettings:
        """Every class, down to a low score, so that disagreements near the threshold show."""
        detector = DetectorSettings(labels=tuple(read_lines(data["labels"])), score_threshold=CANDIDATE_SCORE)
        return InferenceSettings(threads=threads, detector=detector)

    def _inputs(self, model: TFLiteModel, frames: list[Image]) -> list[FloatArray]:
        _, height, width, _ = model.only_input().shape
        return [pixel_values(letterbox(frame, width, height)[0], yolov8.PIXEL_RANGE) for frame in frames]

    def _person_scores(
        self, model: TFLiteModel, labels: list[str], coords: str, frames: list[Image]
    ) -> list[list[float]]:
        """Each frame's person-box scores from CANDIDATE_SCORE up, as the appliance decodes them."""
        output = model.only_output()
        _, height, width, _ = model.only_input().shape
        scale = (float(width), float(height)) if coords == "normalized" else (1.0, 1.0)
        ids = np.array([labels.index(name) for name in self.persons], np.intp)
        settings = DetectorSettings(labels=self.persons, score_threshold=CANDIDATE_SCORE)
        scores: list[list[float]] = []
        for values in progress(iterable=self._inputs(model, frames), desc="person scores on the calibration frames"):
            raw = model.run({model.only_input().name: values[None]})[output.name][0]
            scores.append(yolov8.decode(raw, output, ids, scale, settings)[1].tolist())
        return scores

    def _source_people(self, frames: list[Image]) -> list[int] | None:
        """People the source model counts on each frame at its own size, at the appliance's default score."""
        if self.reference is None:
            return None
        persons = set(self.persons)
        return [
            sum(d.label in persons and d.score >= DEFAULT_PRESENCE.score for d in self.reference.detect(frame))
            for frame in progress(
                iterable=frames, desc=f"the source at {self.reference.size[0]}x{self.reference.size[1]}"
            )
        ]

    def params(
        self, float_models: Mapping[str, TFLiteModel], data: Mapping[str, Path], frames: list[Image]
    ) -> dict[str, Any]:
        labels = read_lines(data["labels"])
        missing = [name for name in (*self.persons, *self.falls) if name not in labels]
        if missing:
            raise ConvertError(
                f"{data['labels']}: no {', '.join(map(repr, missing))} line; name the person classes with "
                f"--person-labels (the labels are {', '.join(labels[:12])})"
            )
        coords = self.coords
        if coords == "auto":
            # Normalised boxes stay within about 0..1; pixel boxes reach the input size.
            largest = max(float(np.abs(output[:4]).max()) for output in self._float_outputs(float_models, frames))
            coords = "normalized" if largest <= 2.0 else "pixels"
        per_frame = self._person_scores(float_models["model"], labels, coords, frames)
        self.presence = presence_scores(per_frame, self._source_people(frames))
        return {
            "person_classes": list(self.persons),
            "fall_classes": list(self.falls),
            "coords": coords,
            "presence_score": self.presence.score,
            "confirm_score": self.presence.confirm,
            "presence_source": self.presence.source,
        }

    def agreement(self, reference: Detector, quantized: Detector, frames: list[Image]) -> Agreement:
        found_float = found_int8 = 0
        ious: list[float] = []
        pairs: list[tuple[float, float]] = []
        source = _SourceComparison(self.reference, self.presence, frames) if self.reference is not None else None
        for frame in progress(iterable=frames, desc="validating detector"):
            a, b = reference.detect(frame), quantized.detect(frame)
            found_float, found_int8 = found_float + len(a), found_int8 + len(b)
            for wanted, found in _match(b, a):
                ious.append(iou_one_to_many(np.array(wanted.box), np.array([found.box]))[0])
                pairs.append((wanted.score, found.score))
            if source is not None:
                source.add(frame, a, b, quantized.person_classes)
        matched = len(ious) / found_float if found_float else 1.0
        mean_iou = float(np.mean(ious)) if ious else 0.0
        # Boxes and scores share one output tensor, hence one quantization step.
        score_step = quantized.models["model"].only_output().scale
        near_half = score_step_near_half(quantized.models["model"].path)
        metrics: dict[str, Any] = {
            "frames": len(frames),
            "float_boxes": found_float,
            "int8_boxes": found_int8,
            "matched_boxes": len(ious),
            "matched_rate": matched,
            "mean_iou": mean_iou,
            "mean_score_difference": float(np.mean([abs(x - y) for x, y in pairs])) if pairs else 0.0,
            "score_step": score_step,
            "score_step_near_half": near_half,
        }
        summary = (
            f"detector: {len(ious)} of {found_float} float boxes matched by an int8 box ({matched:.1%}, IoU >= 0.5), "
            f"mean IoU {mean_iou:.3f}, mean score difference {metrics['mean_score_difference']:.4f}; int8 found "
            f"{found_int8} boxes on {len(frames)} held-out frames"
        )
        if near_half is not None:
            summary += f"; int8 scores near 0.5 are at most {near_half:.4f} apart"
        if source is not None:
            metrics["source"] = source.metrics()
            summary += "\n" + source.summary()
        if score_step > COARSE_SCORE_STEP:
            summary += (
                f"\nwarning: the int8 output moves in steps of {score_step:.3f}, so scores can only be multiples "
                "of it: the boxes are in input pixels and share the tensor with the scores; normalise them to 0..1 "
                "inside the model, as Ultralytics' TFLite export does"
            )
        return Agreement(metrics, summary, pairs, "score of a matched box")


class _SourceComparison:
    """The converted detector at its size against the source model at its own: the people it finds, and
    how many it counts, each at its own presence score (the source at the appliance's default)."""

    def __init__(self, source: ReferenceDetector, presence: PresenceScores, frames: list[Image]) -> None:
        self.source, self.presence = source, presence
        self.people: list[int] = []  # per frame: people the source counts
        self.counted: dict[str, list[int]] = {"float": [], "int8": []}  # per frame: people each counts
        self.found: dict[str, int] = {"float": 0, "int8": 0}  # source people matched by a candidate box

    def add(self, frame: Image, floats: list[Detection], int8s: list[Detection], persons: frozenset[int]) -> None:
        wanted = [d for d in self.source.detect(frame) if d.class_id in persons and d.score >= DEFAULT_PRESENCE.score]
        self.people.append(len(wanted))
        for name, found in (("float", floats), ("int8", int8s)):
            people = [d for d in found if d.class_id in persons]
            self.counted[name].append(sum(d.score >= self.presence.score for d in people))
            # the class may differ (upright against fallen): a person found is a person found
            merged = [replace(d, class_id=0) for d in people]
            self.found[name] += len(_match(merged, [replace(d, class_id=0) for d in wanted]))

    def metrics(self) -> dict[str, Any]:
        people = sum(self.people)
        return {
            "size": f"{self.source.size[0]}x{self.source.size[1]}",
            "people": people,
            "people_per_frame": people / max(1, len(self.people)),
            **{f"{name}_found": self.found[name] / max(1, people) for name in self.found},
            **{f"{name}_per_frame": float(np.mean(c)) if c else 0.0 for name, c in self.counted.items()},
            **{
                f"{name}_count_within_one": float(
                    np.mean([abs(x - y) <= 1 for x, y in zip(c, self.people, strict=True)])
                )
                if c
                else 0.0
                for name, c in self.counted.items()
            },
        }

    def summary(self) -> str:
        m = self.metrics()
        return (
            f"against the source at {m['size']} (float, people at {DEFAULT_PRESENCE.score}): of its {m['people']} "
            f"people, float finds {m['float_found']:.1%} and int8 {m['int8_found']:.1%} (IoU >= 0.5, a box from "
            f"{CANDIDATE_SCORE}); people per frame {m['people_per_frame']:.2f} there, {m['float_per_frame']:.2f} float "
            f"and {m['int8_per_frame']:.2f} int8 here at the presence score {self.presence.score} (within one of the "
            f"source on {m['float_count_within_one']:.0%} and {m['int8_count_within_one']:.0%} of the frames)"
        )


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
