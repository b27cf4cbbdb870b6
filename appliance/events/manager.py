"""Events: one per camera and presence interval, from the person's arrival to the end of the post-roll.

The main loop owns the manager and feeds it every detection; the manager owns each camera's
presence tracker and event, starts and ends recordings, picks keyframes for the describer, turns
descriptions into captions and alerts, and hands every report to the sink (the MQTT stage).

With ``trigger = both`` (two cameras watching one space) an event starts only while both cameras
see a person: a false person in one view starts nothing. Once started, a camera's event goes on
while that camera sees the person, as the other view may lose them behind furniture. Post-roll runs from the moment the
person was last seen, and never ends an event before presence has expired.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.cameras.source import Frame
from appliance.events.describer import Description, Keyframe
from appliance.events.journal import EventJournal, OpenEvent
from appliance.events.presence import PresenceSettings, PresenceTracker
from appliance.events.reports import (
    AlertLevel,
    AlertReport,
    CaptionReport,
    EndReason,
    EventPhase,
    EventReport,
    PersonState,
    Report,
)
from appliance.inference.detector import Detection
from appliance.motion import BoxMotion
from appliance.recording.clips import NoRoomError

log = logging.getLogger(__name__)

SMOOTHING = 0.5  # weight of the newest keyframe's classifier scores in the event's running average
LEVELS: tuple[AlertLevel, ...] = ("none", "warning", "alarm")


class ClipOutput(Protocol):
    """What the manager needs of a camera's recorder."""

    def begin(self, path: Path) -> None: ...

    def end(self) -> Path | None: ...


@dataclass(frozen=True)
class EventSettings:
    keyframe_every: float = 4.0
    postroll: float = 5.0
    trigger: str = "any"  # any or both
    alert_labels: tuple[str, ...] = ("violence",)
    alert_score: float = 0.6
    alert_words: tuple[str, ...] = ("knife", "gun", "weapon", "fight", "fighting", "blood", "fire")
    presence: PresenceSettings = field(default_factory=PresenceSettings)


@dataclass(frozen=True)
class CameraOutputs:
    name: str
    recorder: ClipOutput | None  # None: recording is off
    clip_path: Callable[[str, float], Path] | None  # (event id, wall time) -> the clip's final path


def wall_time(monotonic: float) -> float:
    """A time.monotonic() reading as seconds since the epoch."""
    return time.time() - (time.monotonic() - monotonic)


def alert_of(
    caption: str | None, labels: dict[str, float], settings: EventSettings
) -> tuple[AlertLevel, tuple[str, ...]]:
    """The alert level and its reasons: one source (a word or a label) is a warning, both an alarm."""
    text = " " + " ".join(re.findall(r"[a-z0-9]+", (caption or "").lower())) + " "
    words = [f"word:{w}" for w in settings.alert_words if f" {w.lower()} " in text]
    hits = [label for label in settings.alert_labels if labels.get(label, 0.0) >= settings.alert_score]
    scores = [f"{label}:{labels[label]:.2f}" for label in hits]
    level: AlertLevel = "alarm" if words and scores else "warning" if words or scores else "none"
    return level, tuple(words + scores)


@dataclass
class _Event:
    id: str
    started: float  # monotonic
    clip: Path | None
    persons: int = 0
    max_persons: int = 0
    labels: dict[str, float] = field(default_factory=dict)  # smoothed classifier scores
    alert: AlertLevel = "none"
    best: Keyframe | None = None  # the best frame since the last keyframe was sent
    next_keyframe: float = float("-inf")
    gone_at: float | None = None  # monotonic: when confirmation was lost (post-roll running)
    recording: bool = False  # the recorder is writing ``clip``


class _Camera:
    def __init__(
        self, slot: int, outputs: CameraOutputs, settings: EventSettings, person_classes: frozenset[int]
    ) -> None:
        self.slot, self.outputs = slot, outputs
        self.presence = PresenceTracker(settings.presence, person_classes)
        self.motion = BoxMotion()
        self.event: _Event | None = None
        self.sensor = False  # the person sensor as last reported


class EventManager:
    def __init__(
        self,
        settings: EventSettings,
        cameras: dict[int, CameraOutputs],
        person_classes: frozenset[int],
        submit: Callable[[Keyframe], None],
        sink: Callable[[Report], None],
        journal: EventJournal | None = None,
    ) -> None:
        self.settings = settings
        self._journal = journal
        self._cameras = {slot: _Camera(slot, out, settings, person_classes) for slot, out in cameras.items()}
        self._submit, self._sink = submit, sink
        self.events_started = 0
        self._recent: dict[str, _Event] = {}  # ended events whose last descriptions may still come

    def watch(self, slot: int) -> bool:
        """Whether the camera must be detected at every tick: it sees a person (its own view, before any
        cross-camera confirmation), or one of its latest detections found one surely. A small person far away
        barely moves the motion gate's tiny image, so an idle check may be the first to find them; the
        sightings that confirm them must come a tick apart, not an idle period (measured: 5.4 s late)."""
        presence = self._cameras[slot].presence
        return presence.present or presence.arriving

    def on_detection(self, slot: int, frame: Frame, detections: Sequence[Detection]) -> None:
        camera = self._cameras[slot]
        height, width = frame.image.shape[:2]
        camera.motion.update(frame.image)
        camera.presence.update(detections, float(width * height), frame.time, camera.motion.moved)
        self.tick(frame.time)
        event, people = camera.event, camera.presence.people
        if event is None or event.gone_at is not None or not people:
            return
        event.persons = len(people)
        event.max_persons = max(event.max_persons, event.persons)
        self._note(camera, event)
        score = max(p.score for p in people)
        if event.best is None or score > event.best.score:
            boxes = tuple(p.box for p in sorted(people, key=lambda p: -p.area))
            event.best = Keyframe(event.id, slot, frame, boxes, score)
        if frame.time >= event.next_keyframe:
            self._submit(event.best)
            event.best, event.next_keyframe = None, frame.time + self.settings.keyframe_every

    def tick(self, now: float) -> None:
        """Advance every camera's state to ``now``: presence expiry, confirmation, keyframes, post-roll."""
        for camera in self._cameras.values():
            camera.presence.expire(now)
        everyone = all(c.presence.present for c in self._cameras.values())
        for camera in self._cameras.values():
            # Confirmation gates the start; a running event goes on while its own camera sees the person.
            running = camera.event is not None and camera.event.gone_at is None
            confirmed = camera.presence.present and (self.settings.trigger == "any" or everyone or running)
            self._advance(camera, confirmed, now)

    def _advance(self, camera: _Camera, confirmed: bool, now: float) -> None:
        event = camera.event
        if confirmed != camera.sensor:
            camera.sensor = confirmed
            self._sink(PersonState(camera.outputs.name, confirmed, wall_time(now)))
        if confirmed:
            if event is None:
                event = camera.event = self._start(camera, now)
            elif event.gone_at is not None:
                event.gone_at = None  # back within the post-roll: the same event goes on
        elif event is not None:
            if event.gone_at is None:
                event.gone_at = now
            if now >= max(event.gone_at, camera.presence.last_seen + self.settings.postroll):
                self._end(camera, event, now)

    def _start(self, camera: _Camera, now: float) -> _Event:
        name = camera.outputs.name
        started = wall_time(now)
        event_id = f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{secrets.token_hex(2)}"
        clip = None
        if camera.outputs.recorder is not None and camera.outputs.clip_path is not None:
            try:
                clip = camera.outputs.clip_path(event_id, started)
                camera.outputs.recorder.begin(clip)
            except NoRoomError as error:  # a full disk or quota: the event goes on in text
                log.error("%s: event %s has no clip: %s", name, event_id, error)
                clip = None
            except Exception:  # a recording that cannot start must not stop the text
                log.exception("%s: the clip of event %s could not start", name, event_id)
                clip = None
        event = _Event(event_id, now, clip, persons=camera.presence.persons, max_persons=camera.presence.persons)
        event.recording = clip is not None
        self.events_started += 1
        self._note(camera, event, force=True)
        log.info("%s: event %s started", name, event_id)
        self._sink(self._report("start", camera, event, now))
        return event

    def _note(self, camera: _Camera, event: _Event, force: bool = False) -> None:
        """Keep the open event on disk (the journal), for the next start to end it should this run die."""
        if self._journal is None:
            return
        last_seen = max(camera.presence.last_seen, event.started)
        record = OpenEvent(
            event.id,
            camera.outputs.name,
            wall_time(event.started),
            wall_time(last_seen),
            event.max_persons,
            event.alert,
            dict(event.labels),
            str(event.clip) if event.clip is not None else None,
        )
        self._journal.note(record, force)

    def _end(self, camera: _Camera, event: _Event, now: float, reason: EndReason = "gone") -> None:
        camera.event = None
        if self._journal is not None:
            self._journal.forget(event.id)
        self._finish_clip(camera, event)
        event.persons = 0
        event.best = None  # a recent event waits only for late descriptions: holding its frame would pile up frames
        self._recent = {k: v for k, v in self._recent.items() if v.started > now - 600} | {event.id: event}
        log.info("%s: event %s ended, clip %s", camera.outputs.name, event.id, event.clip)
        self._sink(self._report("end", camera, event, now, ended=camera.presence.last_seen, reason=reason))

    def _report(
        self,
        phase: EventPhase,
        camera: _Camera,
        event: _Event,
        now: float,
        ended: float | None = None,
        reason: EndReason | None = None,
    ) -> EventReport:
        """The event's report; ``now`` and ``ended`` are monotonic times, like the event's start. All three
        become wall-clock times with one offset: converted one by one, a person seen only at the start
        made an event end microseconds before it began (a duration of -0.0 s)."""
        shift = wall_time(0.0)
        return EventReport(
            phase,
            event.id,
            camera.outputs.name,
            shift + event.started,
            shift + now,
            event.persons,
            event.max_persons,
            None if ended is None else shift + max(ended, event.started),
            str(event.clip) if event.clip is not None else None,
            event.alert,
            dict(event.labels),
            reason,
        )

    def on_description(self, description: Description) -> None:
        """A keyframe described: smooth the scores, judge the alert, report caption, update and alert."""
        keyframe = description.keyframe
        camera = self._cameras[keyframe.camera]
        event = camera.event if camera.event is not None and camera.event.id == keyframe.event_id else None
        event = event or self._recent.get(keyframe.event_id)
        labels = description.labels
        if event is not None:
            for label, score in labels.items():
                previous = event.labels.get(label)
                event.labels[label] = score if previous is None else SMOOTHING * score + (1 - SMOOTHING) * previous
            labels = dict(event.labels)
        text = description.caption.text if description.caption is not None else None
        level, reasons = alert_of(text, labels, self.settings)
        grabbed = wall_time(keyframe.frame.time)
        name = camera.outputs.name
        if description.caption is not None:
            self._sink(
                CaptionReport(
                    keyframe.event_id,
                    name,
                    grabbed,
                    description.caption.text,
                    description.caption.mean_logprob,
                    labels,
                    len(keyframe.boxes),
                    level,
                    reasons,
                    description.done - keyframe.frame.time,
                )
            )
        if event is None:
            return
        if LEVELS.index(level) > LEVELS.index(event.alert):
            event.alert = level
            self._sink(AlertReport(event.id, name, grabbed, level, reasons, text))
            if camera.event is event:
                self._note(camera, event, force=True)
        if camera.event is event:
            self._sink(self._report("update", camera, event, description.done))

    def _finish_clip(self, camera: _Camera, event: _Event) -> None:
        """Finish the event's clip, if it is being written: ``clip`` becomes the finished file, or None."""
        if not event.recording or camera.outputs.recorder is None:
            return
        event.recording = False
        clip = None
        try:
            clip = camera.outputs.recorder.end()
        except Exception:
            log.exception("%s: the clip of event %s could not be finished", camera.outputs.name, event.id)
        event.clip = clip

    def cut_clips(self) -> list[Path]:
        """Finish every clip being written now (no room is left for them); their events go on in text."""
        cut = []
        for camera in self._cameras.values():
            if camera.event is not None and camera.event.recording:
                self._finish_clip(camera, camera.event)
                log.error(
                    "%s: the clip of event %s was cut short: no room for more", camera.outputs.name, camera.event.id
                )
                if camera.event.clip is not None:
                    cut.append(camera.event.clip)
        return cut

    @property
    def recording(self) -> bool:
        """Whether a clip is being written."""
        return any(c.event is not None and c.event.recording for c in self._cameras.values())

    def close(self, now: float) -> None:
        """End every open event now (the service is stopping): clips are finished, ends reported."""
        for camera in self._cameras.values():
            if camera.event is not None:
                self._end(camera, camera.event, now, reason="stopped")
            if camera.sensor:
                camera.sensor = False
                self._sink(PersonState(camera.outputs.name, False, wall_time(now)))
