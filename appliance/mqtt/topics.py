"""Topic names and payloads: what each report becomes on the wire.

Every topic starts with ``<prefix>/<device>``. Per camera: ``<camera>/person`` (retained ``ON`` or
``OFF``), ``<camera>/event``, ``<camera>/caption`` and ``<camera>/state`` (retained camera
health). Per device: ``status`` (retained ``online``/``offline``, also the last will), ``alert``
and ``stats``.

JSON payloads are compact objects with ``"v"`` (the payload version of the topic, raised only when
a field changes meaning or goes away; new fields may appear without it: ``caption`` and ``alert``
are at 2, the first line of a caption being composed from validated facts since), ``device``, ``time`` (ISO 8601
UTC with milliseconds, ``2024-05-01T14:03:12.345Z``) and ``ts`` (the same instant in epoch
seconds). Other times are ISO 8601 strings as well; scores are rounded to 3 decimals (null where
a model gave NaN, so the payload stays valid JSON).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import time as wall_clock
from typing import Any, assert_never

from appliance.events.reports import (
    AlertReport,
    CameraReport,
    CaptionReport,
    EventReport,
    Fact,
    Facts,
    PersonState,
    Report,
)
from appliance.masking import mask_secrets

PAYLOAD_VERSION = 1
# v2: ``caption`` is the first line (composed from validated facts where the captioner is not validated),
# the captioner's sentence and score moved to ``model_caption``; alerts carry ``text`` and ``kinds``
CAPTION_VERSION = ALERT_VERSION = 2
ONLINE, OFFLINE = "online", "offline"
PERSON_ON, PERSON_OFF = "ON", "OFF"


@dataclass(frozen=True)
class Message:
    """One MQTT message, as the outbox stores it and the publisher sends it."""

    topic: str
    payload: str
    retain: bool = False
    qos: int = 1

    def __post_init__(self) -> None:
        # A message the broker would refuse must fail where it is made, not sit at the head of
        # the outbox and block every message behind it.
        if not self.topic or any(c in self.topic for c in "+#\0"):
            raise ValueError(f"not a topic to publish to: {self.topic!r}")
        if self.qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, not {self.qos}")


def iso_time(time: float) -> str:
    """``time`` (epoch seconds) as ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def device_id(configured: str) -> str:
    """The configured device id, or else the host name made fit for a topic level."""
    if configured:
        return configured
    host = socket.gethostname().split(".")[0]
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in host) or "appliance"


def _number(value: float) -> float | None:
    """``value`` to 3 decimals; null for NaN or infinity, which JSON cannot carry."""
    return round(value, 3) if math.isfinite(value) else None


def _scores(labels: Mapping[str, float]) -> dict[str, float | None]:
    return {label: _number(score) for label, score in labels.items()}


class Topics:
    """The topic names of one device, and the messages its reports become."""

    def __init__(self, prefix: str, device: str) -> None:
        self.prefix = prefix
        self.device = device
        self.root = f"{prefix}/{device}"

    def status(self) -> str:
        return f"{self.root}/status"

    def alert(self) -> str:
        return f"{self.root}/alert"

    def stats(self) -> str:
        return f"{self.root}/stats"

    def person(self, camera: str) -> str:
        return f"{self.root}/{camera}/person"

    def event(self, camera: str) -> str:
        return f"{self.root}/{camera}/event"

    def caption(self, camera: str) -> str:
        return f"{self.root}/{camera}/caption"

    def camera(self, camera: str) -> str:
        """The camera's health (retained)."""
        return f"{self.root}/{camera}/state"

    def status_message(self, online: bool) -> Message:
        return Message(self.status(), ONLINE if online else OFFLINE, retain=True)

    def messages_for(self, report: Report) -> list[Message]:
        """The messages that tell subscribers about ``report``."""
        if isinstance(report, PersonState):
            return [Message(self.person(report.camera), PERSON_ON if report.present else PERSON_OFF, retain=True)]
        if isinstance(report, EventReport):
            return [Message(self.event(report.camera), self._json(report.time, _event_fields(report)))]
        if isinstance(report, CaptionReport):
            fields = _caption_fields(report)
            return [Message(self.caption(report.camera), self._json(report.time, fields, CAPTION_VERSION))]
        if isinstance(report, AlertReport):
            fields = {
                "camera": report.camera,
                "event_id": report.event_id,
                "level": report.level,
                "kinds": list(report.kinds),
                "reasons": list(report.reasons),
                "text": report.text,
                "caption": report.caption,
            }
            return [Message(self.alert(), self._json(report.time, fields, ALERT_VERSION))]
        if isinstance(report, CameraReport):
            error = mask_secrets(report.error) if report.error is not None else None
            fields = {"camera": report.camera, "state": report.state, "error": error}
            return [Message(self.camera(report.camera), self._json(report.time, fields), retain=True)]
        assert_never(report)

    def stats_message(self, fields: Mapping[str, Any], time: float | None = None) -> Message:
        """A stats message holding ``fields`` (JSON values) beside the common ones; ``time`` defaults to now."""
        return Message(self.stats(), self._json(wall_clock() if time is None else time, dict(fields)))

    def _json(self, time: float, fields: dict[str, Any], version: int = PAYLOAD_VERSION) -> str:
        common = {"v": version, "device": self.device, "time": iso_time(time), "ts": round(time, 3)}
        return json.dumps(common | fields, separators=(",", ":"), ensure_ascii=False)


def _event_fields(report: EventReport) -> dict[str, Any]:
    last = report.ended if report.ended is not None else report.time
    return {
        "camera": report.camera,
        "event_id": report.event_id,
        "phase": report.phase,
        "started": iso_time(report.started),
        "ended": iso_time(report.ended) if report.ended is not None else None,
        "duration": round(last - report.started, 3),
        "persons": report.persons,
        "max_persons": report.max_persons,
        "alert": report.alert,
        "labels": _scores(report.labels),
        "clip": report.clip,
        "reason": report.reason,
        "facts": _facts(report.facts) if report.facts is not None else None,
    }


def _fact(fact: Fact[Any], value: Any) -> dict[str, Any]:
    return {"value": value, "model": fact.model, "validated": fact.validated}


def _facts(facts: Facts) -> dict[str, Any]:
    """Each fact with the model that found it and whether that model is validated for the camera."""
    return {
        "people": _fact(facts.people, facts.people.value),
        "down": _fact(facts.down, facts.down.value) if facts.down is not None else None,
        "holding": _fact(facts.holding, list(facts.holding.value)),
        "labels": _fact(facts.labels, _scores(facts.labels.value)) if facts.labels is not None else None,
    }


def _caption_fields(report: CaptionReport) -> dict[str, Any]:
    return {
        "camera": report.camera,
        "event_id": report.event_id,
        "caption": report.caption,
        "composed": report.composed,
        "model_caption": None
        if report.model_caption is None
        else {
            "text": report.model_caption.text,
            # the geometric mean of the tokens' probabilities: 0..1, easier to read than a log
            "score": _number(math.exp(report.model_caption.logprob)),
            "validated": report.model_caption.validated,
        },
        "facts": _facts(report.facts),
        "labels": _scores(report.labels),
        "persons": report.persons,
        "alert": report.alert,
        "reasons": list(report.reasons),
        "latency": _number(report.latency),
    }
