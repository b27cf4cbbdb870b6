"""What the events stage reports: the typed messages the MQTT stage turns into payloads.

Times are wall-clock seconds since the epoch (what a subscriber can read); each report names its
camera by its configured name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

AlertLevel = Literal["none", "warning", "alarm"]
EventPhase = Literal["start", "update", "end"]
EndReason = Literal["gone", "stopped", "interrupted"]


@dataclass(frozen=True, kw_only=True)
class Fact(Generic[T]):
    """One thing a model found, with the model and whether it is validated for the camera."""

    value: T
    model: str  # the slot whose model found it: detector, classifier, captioner
    validated: bool  # the model was trained on this camera's world (see appliance.events.trust)


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What the models found in a keyframe."""

    people: Fact[int]  # people counted in the keyframe
    down: Fact[int] | None  # people down (held for the alert hold); None: no model here can tell
    holding: Fact[tuple[str, ...]]  # objects of concern whose box lies on a person's
    labels: Fact[dict[str, float]] | None  # the classifier's smoothed scores; None: no classifier


@dataclass(frozen=True)
class PersonState:
    """A camera's person sensor changed (retained ON/OFF)."""

    camera: str
    present: bool
    time: float


@dataclass(frozen=True)
class EventReport:
    """An event's start, an update while it lasts, or its end."""

    phase: EventPhase
    event_id: str
    camera: str
    started: float
    time: float
    persons: int  # people seen in the latest detection
    max_persons: int  # most people seen at once during the event
    ended: float | None = None  # when the person left (end only)
    clip: str | None = None  # the clip's path when recording; on end, the finished file
    alert: AlertLevel = "none"  # the highest alert level of the event so far
    labels: dict[str, float] = field(default_factory=dict)  # smoothed classifier scores
    # why it ended (end only): gone (the person left), stopped (the service stopped), interrupted (the
    # service died mid-event: ended at its next start, with the clip made whole from what was on the disk)
    reason: EndReason | None = None
    facts: Facts | None = None  # the latest keyframe's facts; None before the first is described


@dataclass(frozen=True, kw_only=True)
class ModelCaption:
    """The captioner's own sentence."""

    text: str
    logprob: float  # mean log-probability per token
    validated: bool


@dataclass(frozen=True, kw_only=True)
class CaptionReport:
    """A keyframe described: what a user reads first, the facts it comes from, the captioner's sentence."""

    event_id: str
    camera: str
    time: float  # when the keyframe was grabbed
    caption: str  # the first line: the captioner's sentence where it is validated, else ``composed``
    composed: str  # the description composed from the validated facts
    model_caption: ModelCaption | None  # None without a captioner slot
    facts: Facts
    labels: dict[str, float]  # smoothed classifier scores over the event so far
    persons: int
    alert: AlertLevel
    reasons: tuple[str, ...]  # why the alert level is what it is, e.g. ("word:knife", "violence:0.82")
    latency: float  # seconds from keyframe grab to this report


@dataclass(frozen=True, kw_only=True)
class AlertReport:
    """An alert raised during an event (once per event and level, when the level rises)."""

    event_id: str
    camera: str
    time: float
    level: AlertLevel
    reasons: tuple[str, ...]
    kinds: tuple[str, ...]  # violence, fall
    text: str  # the alert in words, in the configured language
    caption: str | None  # the first line of the latest caption


@dataclass(frozen=True)
class CameraReport:
    """A camera's health changed: ``ok``, ``failed`` (being reopened) or ``ended`` (a file played out)."""

    camera: str
    state: str  # the grabber's: ok, failed or ended
    time: float
    error: str | None = None


Report = PersonState | EventReport | CaptionReport | AlertReport | CameraReport
