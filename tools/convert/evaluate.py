"""How good a model is, measured through the appliance's own inference code.

- detector: AP50 for persons (all-point interpolation of the precision-recall curve; regions
  marked ignore count neither way), recall and precision at the operating score, recall of
  small people (under 50 px tall) apart, false positives per hour on empty footage;
- classifier: accuracy, per label;
- captioner: corpus BLEU-1..4 (Papineni et al., brevity penalty, one reference per image), the
  exact-match rate, accuracy per category of fact (person count, action, held object, shirt
  colour), the recall of knives on frames where someone holds one and how often a caption says
  knife on a frame without one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from appliance.inference.captioner import Captioner
from appliance.inference.classifier import Classifier
from appliance.inference.detector import Detection, Detector, iou_one_to_many
from appliance.inference.imaging import Box, Image
from appliance.sim import captions
from appliance.sim.figure import OBJECTS
from tools.convert.progress import progress

SMALL = 50.0  # pixels tall: a small person


@dataclass(frozen=True)
class TruthBox:
    box: Box
    ignore: bool


def _match(detections: Sequence[Detection], truth: Sequence[TruthBox]) -> list[str]:
    """For each detection, best score first: 'tp', 'fp' or 'ignored'; plus which truths were found."""
    wanted = [t for t in truth if not t.ignore]
    ignored = [t for t in truth if t.ignore]
    taken = [False] * len(wanted)
    outcome = []
    for detection in sorted(detections, key=lambda d: -d.score):
        box = np.array(detection.box, np.float32)
        if wanted:
            overlaps = iou_one_to_many(box, np.array([t.box for t in wanted], np.float32))
            overlaps[np.array(taken)] = -1.0
            best = int(overlaps.argmax())
            if overlaps[best] >= 0.5:
                taken[best] = True
                outcome.append("tp")
                continue
        if any(_covered(box, t.box) for t in ignored):
            outcome.append("ignored")
        else:
            outcome.append("fp")
    return outcome


def _covered(box: np.ndarray, region: Box) -> bool:
    """A detection mostly inside an ignored region (as COCO treats crowd regions)."""
    x1, y1 = max(box[0], region[0]), max(box[1], region[1])
    x2, y2 = min(box[2], region[2]), min(box[3], region[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-9)
    return inter / area >= 0.5


def average_precision(scored: list[tuple[float, bool]], positives: int) -> float:
    """Area under the interpolated precision-recall curve of (score, is true positive) pairs."""
    if positives == 0:
        return float("nan")
    scored = sorted(scored, key=lambda s: -s[0])
    hits = np.cumsum([tp for _, tp in scored]) if scored else np.zeros(0)
    recall = np.concatenate([[0.0], hits / positives])
    precision = np.concatenate([[1.0], hits / np.arange(1, len(scored) + 1)]) if scored else np.array([1.0])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


@dataclass(frozen=True)
class DetectorMetrics:
    images: int
    people: int
    ap50: float
    recall: float  # at the operating score
    precision: float
    small_people: int
    small_recall: float
    false_positives: int  # at the operating score
    counted_right: float  # share of images whose boxes at the count score number the people exactly

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_detector(
    detector: Detector,
    frames: Iterable[tuple[Image, Sequence[TruthBox]]],
    operating_score: float,
    total: int | None = None,
    count_score: float | None = None,
) -> DetectorMetrics:
    """``detector`` should report scores down to a low threshold (for the curve); the operating
    score is where recall, precision and false positives are counted. People are counted from the
    boxes at ``count_score`` (default: the operating score; the events count from the presence
    score, and also leave out boxes under a least area); boxes on people marked ignored count for
    neither side."""
    least = operating_score if count_score is None else count_score
    scored: list[tuple[float, bool]] = []
    people = small = small_found = found = reported = false = images = right = 0
    for image, truth in progress(iterable=frames, total=total, desc="evaluating detector"):
        images += 1
        detections = detector.detect(image)
        outcome = _match(detections, truth)
        ranked = sorted(detections, key=lambda d: -d.score)
        scored += [(d.score, o == "tp") for d, o in zip(ranked, outcome, strict=True) if o != "ignored"]
        wanted = [t for t in truth if not t.ignore]
        people += len(wanted)
        right += sum(d.score >= least and o != "ignored" for d, o in zip(ranked, outcome, strict=True)) == len(wanted)
        operating = [d for d in ranked if d.score >= operating_score]
        kept = _match(operating, truth)
        found += kept.count("tp")
        reported += kept.count("tp") + kept.count("fp")
        false += kept.count("fp")
        for t in wanted:
            if t.box[3] - t.box[1] < SMALL:
                small += 1
                small_found += any(
                    iou_one_to_many(np.array(t.box, np.float32), np.array([d.box], np.float32))[0] >= 0.5
                    for d in operating
                )
    return DetectorMetrics(
        images,
        people,
        average_precision(scored, people),
        found / people if people else float("nan"),
        found / reported if reported else 1.0,
        small,
        small_found / small if small else float("nan"),
        false,
        right / images if images else float("nan"),
    )


@dataclass(frozen=True)
class ClassifierMetrics:
    crops: int
    accuracy: float
    per_label: dict[str, float]
    confusion: dict[str, dict[str, int]]  # truth -> predicted -> count

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_classifier(
    classifier: Classifier, crops: Iterable[tuple[Image, Box, str]], total: int | None = None
) -> ClassifierMetrics:
    confusion: dict[str, Counter[str]] = {label: Counter() for label in classifier.labels}
    for image, box, label in progress(iterable=crops, total=total, desc="evaluating classifier"):
        confusion[label][classifier.classify(image, box).top[0]] += 1
    count = sum(sum(c.values()) for c in confusion.values())
    right = sum(c[label] for label, c in confusion.items())
    per_label = {label: c[label] / sum(c.values()) for label, c in confusion.items() if c}
    return ClassifierMetrics(
        count, right / count if count else float("nan"), per_label, {k: dict(v) for k, v in confusion.items()}
    )


def corpus_bleu(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]], order: int) -> float:
    """BLEU-``order`` over a corpus, one reference per hypothesis, uniform weights, brevity penalty."""
    return multi_reference_bleu([[reference] for reference in references], hypotheses, order)


def multi_reference_bleu(
    references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]], order: int
) -> float:
    """Corpus BLEU-``order`` with several references per hypothesis (as COCO has five captions an image):
    n-gram counts clipped by their largest count in any reference, and the brevity penalty against
    the reference length closest to each hypothesis (the shorter on a tie), as Papineni et al."""
    matches, totals = [0] * order, [0] * order
    ref_length = hyp_length = 0
    for refs, hypothesis in zip(references, hypotheses, strict=True):
        for n in range(1, order + 1):
            hyp = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
            most: Counter[tuple[str, ...]] = Counter()
            for reference in refs:
                most |= Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
            matches[n - 1] += sum(min(count, most[gram]) for gram, count in hyp.items())
            totals[n - 1] += max(len(hypothesis) - n + 1, 0)
        hyp_length += len(hypothesis)
        ref_length += min((abs(len(r) - len(hypothesis)), len(r)) for r in refs)[1]
    if min(totals) == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / order
    brevity = 1.0 if hyp_length > ref_length else math.exp(1 - ref_length / max(hyp_length, 1))
    return brevity * math.exp(log_precision)


CATEGORIES = ("count", "action", "held", "colour")


@dataclass(frozen=True)
class HeldScore:
    """How the captions name one object, both ways: the knife's figures are the alert's."""

    frames: int  # frames whose true caption names the object
    recall: float  # of those, the share whose caption names it too
    false_alarms: float  # of the other frames, the share whose caption names it (for a knife, a false alert)


@dataclass(frozen=True)
class CaptionerMetrics:
    frames: int
    bleu: dict[str, float]  # "1".."4"
    exact: float
    categories: dict[str, float]  # accuracy per category of fact
    held_objects: dict[str, HeldScore]  # each object the grammar names (knife, bag, phone)
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_captioner(
    captioner: Captioner, frames: Iterable[tuple[Image, str]], total: int | None = None
) -> CaptionerMetrics:
    references, hypotheses = [], []
    right = Counter[str]()
    held, named, named_wrongly = Counter[str](), Counter[str](), Counter[str]()
    examples: list[dict[str, str]] = []
    for image, truth in progress(iterable=frames, total=total, desc="evaluating captioner"):
        said = captioner.caption(image).text
        references.append(truth.split())
        hypotheses.append(said.split())
        expected, got = captions.parse(truth), captions.parse(said)
        assert expected is not None, f"not a caption of the grammar: {truth!r}"
        for category in CATEGORIES:
            right[category] += got is not None and getattr(got, category) == getattr(expected, category)
        for thing in OBJECTS:  # by the word, as the appliance's alert reads a caption
            says = thing in hypotheses[-1]
            if expected.held == thing:
                held[thing] += 1
                named[thing] += says
            else:
                named_wrongly[thing] += says
        if said != truth and len(examples) < 12:
            examples.append({"truth": truth, "said": said})
    count = len(references)
    return CaptionerMetrics(
        count,
        {str(n): corpus_bleu(references, hypotheses, n) for n in range(1, 5)},
        sum(r == h for r, h in zip(references, hypotheses, strict=True)) / count,
        {category: right[category] / count for category in CATEGORIES},
        {
            thing: HeldScore(
                held[thing],
                named[thing] / held[thing] if held[thing] else float("nan"),
                named_wrongly[thing] / (count - held[thing]) if count > held[thing] else float("nan"),
            )
            for thing in OBJECTS
        },
        examples,
    )
