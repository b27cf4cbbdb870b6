"""The model card's metrics compute what their names say, on cases small enough to work by hand.

The models are scripted stand-ins behind the appliance's own detector and captioner contracts:
what is under test is the counting, not a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from appliance.inference.captioner import Caption, Captioner
from appliance.inference.detector import Detection, Detector
from appliance.inference.imaging import Box, Image
from appliance.inference.model import TFLiteModel
from tools.convert.evaluate import (
    TruthBox,
    average_precision,
    corpus_bleu,
    evaluate_captioner,
    evaluate_detector,
    multi_reference_bleu,
)


def _frame(number: int) -> Image:
    """A frame that says which one it is in its first pixel, so a scripted model can answer for it."""
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[0, 0, 0] = number
    return frame


class ScriptedDetector(Detector):
    labels = ("person",)
    person_class = 0
    input_size = (4, 4)

    def __init__(self, answers: Sequence[Sequence[tuple[Box, float]]]) -> None:
        self.answers = answers

    @property
    def models(self) -> Mapping[str, TFLiteModel]:
        return {}

    def detect(self, frame: Image) -> list[Detection]:
        return [Detection(box, score, 0, "person") for box, score in self.answers[int(frame[0, 0, 0])]]


class ScriptedCaptioner(Captioner):
    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = answers

    @property
    def models(self) -> Mapping[str, TFLiteModel]:
        return {}

    def caption(self, frame: Image) -> Caption:
        return Caption(self.answers[int(frame[0, 0, 0])], (), 0.0)


def test_bleu_of_a_perfect_corpus_is_one_and_of_a_disjoint_one_zero() -> None:
    words = [["a", "person", "is", "walking", "in", "the", "shop"]]
    assert corpus_bleu(words, words, 4) == pytest.approx(1.0)
    assert corpus_bleu(words, [["two", "dogs", "ran", "off"]], 1) == 0.0


def test_bleu_clips_repeated_words_and_penalises_short_captions() -> None:
    reference = [["the", "cat", "is", "on", "the", "mat"]]
    # Papineni et al.'s example: seven "the" against a reference holding two: unigram precision 2/7
    assert corpus_bleu(reference, [["the"] * 7], 1) == pytest.approx(2 / 7)
    # four of six words, all right: precision 1, brevity penalty exp(1 - 6/4)
    assert corpus_bleu(reference, [["the", "cat", "is", "on"]], 1) == pytest.approx(np.exp(1 - 6 / 4))


def test_several_references_clip_by_the_most_generous_one() -> None:
    refs = [[["a", "b", "a"], ["a", "c", "d"]]]
    assert multi_reference_bleu(refs, [["a", "a", "a"]], 1) == pytest.approx(2 / 3)


def test_average_precision_is_the_area_under_the_interpolated_curve() -> None:
    assert average_precision([(0.9, True), (0.8, True)], 2) == pytest.approx(1.0)
    # a false box first: recall 1/2 at precision 1/2, then 2/2 at 2/3 (interpolated up to 2/3 for both)
    assert average_precision([(0.9, False), (0.8, True), (0.7, True)], 2) == pytest.approx(2 / 3)
    # a person never found caps recall at one half
    assert average_precision([(0.9, True)], 2) == pytest.approx(0.5)
    assert np.isnan(average_precision([(0.9, False)], 0))


def test_detector_metrics_count_found_missed_false_and_ignored_boxes() -> None:
    big, small, crowd = (0.0, 0.0, 40.0, 100.0), (100.0, 0.0, 110.0, 30.0), (200.0, 0.0, 300.0, 100.0)
    truth = [TruthBox(big, False), TruthBox(small, False), TruthBox(crowd, True)]
    detector = ScriptedDetector(
        [
            [
                ((1.0, 1.0, 40.0, 98.0), 0.9),  # the big person
                ((220.0, 10.0, 260.0, 90.0), 0.8),  # inside the ignored region: neither way
                ((0.0, 0.0, 40.0, 100.0), 0.7),  # the big person again: a duplicate is false
                ((100.0, 0.0, 110.0, 30.0), 0.3),  # the small person, below the operating score
            ],
            [((500.0, 0.0, 540.0, 100.0), 0.95)],  # an empty frame's false box
        ]
    )
    metrics = evaluate_detector(detector, [(_frame(0), truth), (_frame(1), [])], operating_score=0.5)
    assert (metrics.images, metrics.people, metrics.small_people) == (2, 2, 1)
    assert metrics.false_positives == 2
    assert metrics.recall == pytest.approx(0.5)
    assert metrics.precision == pytest.approx(1 / 3)
    assert metrics.small_recall == 0.0
    # ranked 0.95 false, 0.9 true, 0.7 false, 0.3 true: recall 1/2 at precision 1/2, 2/2 at 2/4
    assert metrics.ap50 == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    # counts: 2 boxes for 2 people (the duplicate stands in for the missed small one; the box in the
    # ignored region counts for neither), then 1 box for nobody
    assert metrics.counted_right == pytest.approx(0.5)
    frames = [(_frame(0), truth), (_frame(1), [])]
    assert evaluate_detector(detector, frames, operating_score=0.5, count_score=0.2).counted_right == 0.0


def test_caption_metrics_score_exact_captions_facts_and_held_objects_both_ways() -> None:
    truths = [
        "a person in a red shirt is holding a knife in the shop",
        "a person in a red shirt is holding a knife in the corridor",
        "two people are fighting in the room",
        "a person in a blue shirt is standing in the shop",
        "a person in a white shirt is holding a bag in the room",
        "nobody is at the entrance",
    ]
    said = [
        truths[0],  # exact
        "a person in a red shirt is standing in the corridor",  # the knife missed
        "two people are fighting in the room",  # exact
        "a person in a blue shirt is holding a knife in the shop",  # a knife that is not there
        "a person in a white shirt is holding a phone in the room",  # a phone for the bag
        "nobody is at the entrance",  # exact
    ]
    metrics = evaluate_captioner(ScriptedCaptioner(said), [(_frame(i), t) for i, t in enumerate(truths)])
    assert metrics.frames == 6
    assert metrics.exact == pytest.approx(0.5)
    knife, bag, phone = (metrics.held_objects[thing] for thing in ("knife", "bag", "phone"))
    assert (knife.frames, knife.recall) == (2, 0.5)
    assert knife.false_alarms == pytest.approx(1 / 4)
    assert (bag.frames, bag.recall, bag.false_alarms) == (1, 0.0, 0.0)
    assert phone.frames == 0
    assert math.isnan(phone.recall)
    assert phone.false_alarms == pytest.approx(1 / 6)
    assert metrics.categories["count"] == 1.0
    assert metrics.categories["colour"] == 1.0
    assert metrics.categories["held"] == pytest.approx(3 / 6)
    assert metrics.categories["action"] == pytest.approx(4 / 6)  # holding a phone for a bag: no action said, rightly
    assert [e["said"] for e in metrics.examples] == [said[1], said[3], said[4]]
