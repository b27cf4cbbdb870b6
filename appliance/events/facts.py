"""Facts before prose: what the models found in a keyframe, each with the model that found it and
whether that model is validated for the camera, and the alert that only validated facts may raise.

Alerts come in two kinds. ``violence``: a caption word (``word:knife``), a classifier label over its
score (``violence:0.82``) or an object of the alert words held by a person (``object:knife``).
``fall``: someone down for the alert hold, by the detector's fall class (``fall:detector``) or the
classifier's ``fall`` label (``fall:classifier``). A classifier label alone must stay over its score
for the alert hold (one keyframe alerts nobody); beside another model's finding it counts at once.
One model's finding is a warning; two models agreeing on a kind make an alarm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.events.reports import AlertLevel, Facts

LEVELS: tuple[AlertLevel, ...] = ("none", "warning", "alarm")
FALL_LABEL = "fall"  # the classifier label that means someone is down


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    labels: tuple[str, ...] = ("violence",)  # classifier labels that alert over ``score``
    score: float = 0.6
    words: tuple[str, ...] = ("knife", "gun", "weapon", "fight", "fighting", "blood", "fire")
    fall: bool = True  # someone down alerts


@dataclass(frozen=True, kw_only=True)
class Verdict:
    level: AlertLevel
    reasons: tuple[str, ...]  # e.g. ("word:knife", "violence:0.82", "fall:detector")
    kinds: tuple[str, ...]  # the kinds raised: violence, fall


NO_ALERT = Verdict(level="none", reasons=(), kinds=())


def caption_words(caption: str | None, words: tuple[str, ...]) -> list[str]:
    """The alert words that ``caption`` holds as whole words."""
    text = " " + " ".join(re.findall(r"[a-z0-9]+", (caption or "").lower())) + " "
    return [w for w in words if f" {w.lower()} " in text]


def fighting(facts: Facts, settings: AlertSettings) -> bool:
    """A validated classifier scores an alert label (other than a fall) over the alert score."""
    labels = facts.labels
    return (
        labels is not None
        and labels.validated
        and any(labels.value.get(label, 0.0) >= settings.score for label in settings.labels if label != FALL_LABEL)
    )


def judge(
    facts: Facts,
    caption: str | None,
    caption_validated: bool,
    falls: tuple[str, ...],
    held: frozenset[str],
    settings: AlertSettings,
) -> Verdict:
    """The alert that the validated facts raise: the caption's words (when its model is validated), the
    objects held, the detector's falls (``fall:detector``, held already) and the classifier's labels over
    the alert score. A label counts alone once ``held`` (over the score for the alert hold); beside another
    model's finding of its kind it counts at once, as two models agreeing on one keyframe are no accident."""
    violence: dict[str, list[str]] = {}  # model -> its reasons
    if caption_validated:
        violence["captioner"] = [f"word:{w}" for w in caption_words(caption, settings.words)]
    if facts.holding.validated:
        alerting = {w.lower() for w in settings.words}
        objects = [f"object:{thing}" for thing in dict.fromkeys(facts.holding.value) if thing.lower() in alerting]
        violence.setdefault(facts.holding.model, []).extend(objects)
    fall: dict[str, list[str]] = {reason.split(":")[1]: [reason] for reason in falls}
    labels = facts.labels
    if labels is not None and labels.validated:
        scores = labels.value
        over = [label for label in settings.labels if scores.get(label, 0.0) >= settings.score]
        seconded = any(violence.values())
        found = [f"{label}:{scores[label]:.2f}" for label in over if label in held or seconded]
        violence[labels.model] = found
        if scores.get(FALL_LABEL, 0.0) >= settings.score and (FALL_LABEL in held or fall):
            fall[labels.model] = [f"fall:{labels.model}"]
    kinds = {"violence": {m: r for m, r in violence.items() if r}}
    if settings.fall:
        kinds["fall"] = fall
    level: AlertLevel = "none"
    reasons: list[str] = []
    raised: list[str] = []
    for kind, by_model in kinds.items():
        if not by_model:
            continue
        raised.append(kind)
        reasons += [reason for found in by_model.values() for reason in found]
        kind_level: AlertLevel = "alarm" if len(by_model) >= 2 else "warning"
        level = max(level, kind_level, key=LEVELS.index)
    return Verdict(level=level, reasons=tuple(reasons), kinds=tuple(raised))
