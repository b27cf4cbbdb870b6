"""The model card's measurements of a models folder: held-out synthetic images and the scenarios.

No TensorFlow here: the models run through the appliance's own inference (LiteRT), which is how
a test re-measures the committed models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.inference.detector import Detector
from appliance.inference.imaging import Image
from appliance.inference.loader import DETECTORS, Models, build_slot, load_models
from appliance.inference.manifest import SLOTS, Manifest
from appliance.inference.settings import InferenceSettings
from appliance.service import inference_settings, presence_scores
from appliance.sim.render import PersonTruth, Renderer
from appliance.sim.scenario import Scenario, list_scenarios
from tools.convert import ConvertError
from tools.convert.datasets import read_image
from tools.convert.evaluate import TruthBox, evaluate_captioner, evaluate_classifier, evaluate_detector
from tools.convert.synthetic import SyntheticSet, behaviour

EMPTY_SCENARIO = "empty-lighting"
CURVE_SCORE = 0.05  # the detector reports down to this score when its AP is measured


def _held_out(test: SyntheticSet) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = json.loads(test.truth.read_text())["frames"]
    return frames


def _image(test: SyntheticSet, frame: dict[str, Any]) -> Image:
    return read_image(test.images / frame["file"])


def _people(frame: dict[str, Any]) -> list[PersonTruth]:
    return [PersonTruth.from_json(p) for p in frame["people"]]


def _boxes(frame: dict[str, Any]) -> list[TruthBox]:
    return [TruthBox(p.box, p.ignore) for p in _people(frame)]


# The shipped scenarios the card is measured on. A scenario shipped later (home-fall, hall-bag: for the
# alerts) joins the card at the next reference run, so that the committed card stays what its models measure.
CARD_SCENARIOS = ("corridor-walk", "empty-lighting", "entrance-night", "room-fight", "shop-knife", "two-angles")


def _card_scenarios() -> list[Scenario]:
    return [scenario for scenario in list_scenarios() if scenario.name in CARD_SCENARIOS]


def scenario_frames(every: int, empty: bool) -> Iterator[tuple[Image, list[TruthBox]]]:
    """Every ``every``-th frame of each camera of the card's scenarios with people (or of the empty one)."""
    for scenario in _card_scenarios():
        if (scenario.name == EMPTY_SCENARIO) != empty:
            continue
        for view in range(len(scenario.cameras)):
            renderer = Renderer(scenario, view, seed=0)
            for index in range(0, scenario.frames, every):
                frame = renderer.frame(index)
                yield frame.image, [TruthBox(p.box, p.ignore) for p in frame.truth.people]


def scenario_seconds(every: int, empty: bool) -> tuple[int, float]:
    """How many frames ``scenario_frames`` yields, and how many seconds of video they stand for."""
    frames, seconds = 0, 0.0
    for scenario in _card_scenarios():
        if (scenario.name == EMPTY_SCENARIO) == empty:
            frames += len(scenario.cameras) * len(range(0, scenario.frames, every))
            seconds += len(scenario.cameras) * scenario.duration
    return frames, seconds


CARD_OPERATING_SCORE = 0.4  # the card's recall and precision are measured at this detector score


def _object_truth(frame: dict[str, Any], label: str) -> list[TruthBox]:
    """Where ``label`` is drawn in a person's hand; an ignored person's object is ignored too."""
    return [TruthBox(p.held_box, p.ignore) for p in _people(frame) if p.held == label and p.held_box is not None]


def _objects(
    manifest: Manifest,
    settings: InferenceSettings,
    detector: Detector,
    test: SyntheticSet,
    frames: list[dict[str, Any]],
) -> dict[str, Any]:
    """Per object class of the detector (knife, bag, ...): its figures on the held-out objects in hands."""
    figures = {}
    held = {p.held for f in frames for p in _people(f) if p.held is not None}
    for label in sorted(held & {name for i, name in enumerate(detector.labels) if i not in detector.person_classes}):
        one = build_slot(
            manifest, "detector", DETECTORS, replace(settings, detector=replace(settings.detector, labels=(label,)))
        )
        found = evaluate_detector(
            one, ((_image(test, f), _object_truth(f, label)) for f in frames), CARD_OPERATING_SCORE, len(frames)
        )
        figures[label] = {key: value for key, value in found.to_json().items() if key != "counted_right"}
    return figures


def measure(
    folder: Path, test: SyntheticSet, scenario_every: int, limit: int | None = None, slots: Sequence[str] = SLOTS
) -> dict[str, Any]:
    """Every metric of the model card for the ``slots`` of the models in ``folder``, on the held-out set (its
    first ``limit`` images when given) and on the shipped scenarios."""
    defaults = Config()
    configured = inference_settings(defaults)  # the appliance's defaults, the detector's curve aside
    settings = replace(
        configured,
        threads=2,
        detector=replace(configured.detector, labels=("person",), score_threshold=CURVE_SCORE),
    )
    models: Models = load_models(folder, settings)
    missing = [name for name in slots if name not in models.slots()]
    if missing:
        raise ConvertError(f"{folder}: the model card measures {', '.join(slots)}; missing: {', '.join(missing)}")
    frames = _held_out(test)[:limit]
    measured: dict[str, Any] = {}
    if models.detector is not None and "detector" in slots:
        measured["detector"] = _detector(
            models.manifest, defaults, settings, models.detector, test, frames, scenario_every
        )
    if models.classifier is not None and "classifier" in slots:
        people = [(f, p) for f in frames for p in _people(f) if not p.ignore]
        crops = ((_image(test, f), p.box, behaviour(p)) for f, p in people)
        measured["classifier"] = evaluate_classifier(models.classifier, crops, len(people)).to_json()
    if models.captioner is not None and "captioner" in slots:
        captioner = evaluate_captioner(models.captioner, ((_image(test, f), f["caption"]) for f in frames), len(frames))
        measured["captioner"] = {
            **captioner.to_json(),
            "beam_width": settings.captioner.beam_width,
            "mirror": settings.captioner.mirror,
        }
    return measured


def _detector(
    manifest: Manifest,
    defaults: Config,
    settings: InferenceSettings,
    detector: Detector,
    test: SyntheticSet,
    frames: list[dict[str, Any]],
    scenario_every: int,
) -> dict[str, Any]:
    count = presence_scores(defaults, detector).score  # the score from which the events count people
    operating = CARD_OPERATING_SCORE
    held = evaluate_detector(detector, ((_image(test, f), _boxes(f)) for f in frames), operating, len(frames), count)
    scene_frames, _ = scenario_seconds(scenario_every, empty=False)
    scenes = evaluate_detector(detector, scenario_frames(scenario_every, empty=False), operating, scene_frames, count)
    empty_count, empty_seconds = scenario_seconds(scenario_every, empty=True)
    empty = evaluate_detector(detector, scenario_frames(scenario_every, empty=True), operating, empty_count, count)
    seconds_scored = empty_seconds / scenario_every
    objects = _objects(manifest, settings, detector, test, frames)
    return {
        "held_out": held.to_json(),
        "scenarios": scenes.to_json(),
        "empty": {
            **empty.to_json(),
            "seconds": seconds_scored,
            "false_positives_per_hour": empty.false_positives * 3600 / seconds_scored,
        },
        "operating_score": operating,
        "count_score": count,
        "suppression_iou": defaults.detect_iou,
        "suppression_nested": defaults.detect_nested,
        **({"objects": objects} if objects else {}),
    }
