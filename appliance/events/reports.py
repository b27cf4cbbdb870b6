"""What the events stage reports: the typed messages the MQTT stage turns into payloads.

Times are wall-clock seconds since the epoch (what a subscriber can read); each report names its
camera by its configured name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AlertLevel = Literal["none", "warning", "alarm"]
EventPhase = Literal["start", "update", "end"]
EndReason = Literal["gone", "stopped", "interrupted"]


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


@dataclass(frozen=True)
class CaptionReport:
    """A keyframe described: the caption and the classifier's view of the people in it."""

    event_id: str
    camera: str
    time: float  # when the keyframe was grabbed
    caption: str
    logprob: float  # mean log-probability per token of the caption
    labels: dict[str, float]  # smoothed classifier scores over the event so far
    persons: int
    alert: AlertLevel
    reasons: tuple[str, ...]  # why the alert level is what it is, e.g. ("word:knife", "violence:0.82")
    latency: float  # seconds from keyframe grab to this report


@dataclass(frozen=True)
class AlertReport:
    """An alert raised during an event (once per event and level, when the level rises)."""

    event_id: str
    camera: str
    time: float
    level: AlertLevel
    reasons: tuple[str, ...]
    caption: str | None


@dataclass(frozen=True)
class CameraReport:
    """A camera's health changed: ``ok``, ``failed`` (being reopened) or ``ended`` (a file played out)."""

    camera: str
    state: str  # the grabber's: ok, failed or ended
    time: float
    error: str | None = None


Report = PersonState | EventReport | CaptionReport | AlertReport | CameraReport
