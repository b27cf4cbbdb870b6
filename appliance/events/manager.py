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
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from appliance.cameras.source import Frame
from appliance.events import phrases
from appliance.events.describer import Description, Keyframe
from appliance.events.facts import FALL_LABEL, LEVELS, AlertSettings, Verdict, fighting, judge
from appliance.events.journal import EventJournal, OpenEvent
from appliance.events.presence import PresenceSettings, PresenceTracker
from appliance.events.reports import (
    AlertLevel,
    AlertReport,
    CaptionReport,
    EndReason,
    EventPhase,
    EventReport,
    Fact,
    Facts,
    ModelCaption,
    PersonState,
    Report,
)
from appliance.events.trust import Trust
from appliance.inference.detector import Detection, iou_one_to_many
from appliance.inference.imaging import Box
from appliance.motion import BoxMotion
from appliance.recording.clips import NoRoomError

log = logging.getLogger(__name__)

SMOOTHING = 0.5  # weight of the newest keyframe's classifier scores in the event's running average
FALL_GAP = 1.5  # seconds without a fallen box that end a fall being held (a missed frame or two does not)
FALL_IOU = 0.3  # overlap with the followed fallen person's box that makes a fall box theirs (someone down barely moves)
HELD_SHARE = 0.5  # share of an object's box inside a person's that makes it held by them


class ClipOutput(Protocol):
    """What the manager needs of a camera's recorder."""

    def begin(self, path: Path) -> None: ...

    def end(self) -> Path | None: ...


@dataclass(frozen=True)
class EventSettings:
    keyframe_every: float = 4.0
    postroll: float = 5.0
    trigger: str = "any"  # any or both
    alerts: AlertSettings = field(default_factory=AlertSettings)
    alert_hold: float = 3.0  # seconds a finding must hold before it alerts: someone down, a classifier label
    held_objects: tuple[str, ...] = ()  # detector classes that a person may hold
    language: str = "en"
    presence: PresenceSettings = field(default_factory=PresenceSettings)


@dataclass(frozen=True)
class CameraOutputs:
    name: str
    recorder: ClipOutput | None  # None: recording is off
    clip_path: Callable[[str, float], Path] | None  # (event id, wall time) -> the clip's final path
    trust: Trust  # which models are validated for this camera


def wall_time(monotonic: float) -> float:
    """A time.monotonic() reading as seconds since the epoch."""
    return time.time() - (time.monotonic() - monotonic)


def held_by(people: Sequence[Detection], things: Sequence[Detection]) -> tuple[str, ...]:
    """The labels of ``things`` whose box lies mostly (``HELD_SHARE``) inside a person's box."""
    held = []
    for thing in things:
        x1, y1, x2, y2 = thing.box
        for person in people:
            px1, py1, px2, py2 = person.box
            inside = max(0.0, min(x2, px2) - max(x1, px1)) * max(0.0, min(y2, py2) - max(y1, py1))
            if thing.area > 0 and inside >= HELD_SHARE * thing.area:
                held.append(thing.label)
                break
    return tuple(held)


@dataclass
class _Event:
    id: str
    started: float  # monotonic
    clip: Path | None
    persons: int = 0
    max_persons: int = 0
    labels: dict[str, float] = field(default_factory=dict)  # smoothed classifier scores
    alert: AlertLevel = "none"
    facts: Facts | None = None  # the latest keyframe's
    caption: str | None = None  # the first line of the latest caption
    over: dict[str, float] = field(default_factory=dict)  # label -> keyframe time since which it is over the bar
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
        self.down_box: Box | None = None  # the fallen person followed: their latest box
        self.down_since: float | None = None  # when they were first seen down
        self.down_seen = float("-inf")  # when they were last seen down
        self.fallen = False  # someone has been down for the alert hold (the detector's fall classes)


class EventManager:
    def __init__(
        self,
        settings: EventSettings,
        cameras: dict[int, CameraOutputs],
        person_classes: frozenset[int],
        submit: Callable[[Keyframe], None],
        sink: Callable[[Report], None],
        journal: EventJournal | None = None,
        fall_classes: frozenset[int] = frozenset(),
    ) -> None:
        self.settings = settings
        self._fall_classes = fall_classes
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
        newly_fallen = self._track_fall(camera, frame.time)
        self.tick(frame.time)
        event, people = camera.event, camera.presence.people
        if event is None or event.gone_at is not None or not people:
            return
        if newly_fallen:
            down = sum(p.class_id in self._fall_classes for p in people)
            now = phrases.describe(
                self.settings.language, camera.outputs.name, people=len(people), down=down, holding=(), fighting=False
            )
            self._raise(camera, event, self._verdict(camera, event, event.facts, event.caption), frame.time, now)
        event.persons = len(people)
        event.max_persons = max(event.max_persons, event.persons)
        self._note(camera, event)
        score = max(p.score for p in people)
        if event.best is None or score > event.best.score:
            boxes = tuple(p.box for p in sorted(people, key=lambda p: -p.area))
            down = sum(p.class_id in self._fall_classes for p in people) if camera.fallen else 0
            things = [d for d in detections if d.label in self.settings.held_objects]
            holding = held_by(people, things) if things else ()
            event.best = Keyframe(event.id, slot, frame, boxes, score, down, holding)
        if frame.time >= event.next_keyframe:
            self._submit(event.best)
            event.best, event.next_keyframe = None, frame.time + self.settings.keyframe_every

    def _track_fall(self, camera: _Camera, now: float) -> bool:
        """Follow one fallen person on ``camera`` (a box of a fall class, found again where it was); True when
        they have just been down for the alert hold. Fall boxes of different people do not add up: on vtest.avi
        the real detector scored four walkers, one after another, as fallen (0.32 to 0.40) over 2.9 s."""
        fallen = [p for p in camera.presence.people if p.class_id in self._fall_classes]
        following = camera.down_box is not None and now - camera.down_seen <= FALL_GAP
        if following and fallen:
            assert camera.down_box is not None
            overlap = iou_one_to_many(np.asarray(camera.down_box, np.float32), np.asarray([p.box for p in fallen]))
            best = int(np.argmax(overlap))
            if overlap[best] >= FALL_IOU:
                camera.down_box, camera.down_seen = fallen[best].box, now
        elif not following:
            camera.down_box, camera.down_since = None, None
            if fallen:
                first = max(fallen, key=lambda p: p.score)
                camera.down_box, camera.down_since, camera.down_seen = first.box, now, now
        was = camera.fallen
        camera.fallen = (
            camera.down_since is not None and camera.down_seen - camera.down_since >= self.settings.alert_hold
        )
        return camera.fallen and not was

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
            event.facts,
        )

    def on_description(self, description: Description) -> None:
        """A keyframe described: smooth the scores, gather the facts, judge the alert, report caption,
        update and alert."""
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
            self._track_labels(event, labels, keyframe.frame.time)
        facts = self._facts(camera, event, keyframe, labels)
        trust, name = camera.outputs.trust, camera.outputs.name
        caption = description.caption
        composed = phrases.describe(
            self.settings.language,
            name,
            people=facts.people.value,
            down=facts.down.value if facts.down is not None and facts.down.validated else 0,
            holding=facts.holding.value if facts.holding.validated else (),
            fighting=fighting(facts, self.settings.alerts),
        )
        spoken = trust.validated("captioner")
        first = caption.text if caption is not None and spoken else composed
        verdict = self._verdict(camera, event, facts, caption.text if caption is not None else None, keyframe)
        own = (
            None if caption is None else ModelCaption(text=caption.text, logprob=caption.mean_logprob, validated=spoken)
        )
        self._sink(
            CaptionReport(
                event_id=keyframe.event_id,
                camera=name,
                time=wall_time(keyframe.frame.time),
                caption=first,
                composed=composed,
                model_caption=own,
                facts=facts,
                labels=labels,
                persons=len(keyframe.boxes),
                alert=verdict.level,
                reasons=verdict.reasons,
                latency=description.done - keyframe.frame.time,
            )
        )
        if event is None:
            return
        event.facts, event.caption = facts, first
        self._raise(camera, event, verdict, keyframe.frame.time, first)
        if camera.event is event:
            self._sink(self._report("update", camera, event, description.done))

    def _facts(self, camera: _Camera, event: _Event | None, keyframe: Keyframe, labels: dict[str, float]) -> Facts:
        trust = camera.outputs.trust
        detector, classifier = trust.validated("detector"), trust.validated("classifier")
        down: Fact[int] | None = None
        if self._fall_classes:
            down = Fact(value=keyframe.down, model="detector", validated=detector)
        elif FALL_LABEL in labels:
            held = FALL_LABEL in self._held(event, keyframe.frame.time)
            down = Fact(value=int(held), model="classifier", validated=classifier)
        return Facts(
            people=Fact(value=len(keyframe.boxes), model="detector", validated=detector),
            down=down,
            holding=Fact(value=keyframe.holding, model="detector", validated=detector),
            labels=Fact(value=labels, model="classifier", validated=classifier) if labels else None,
        )

    def _track_labels(self, event: _Event, labels: dict[str, float], now: float) -> None:
        """Note since when each label's smoothed score is over the alert score (keyframe times)."""
        for label, score in labels.items():
            if score < self.settings.alerts.score:
                event.over.pop(label, None)
            else:
                event.over.setdefault(label, now)

    def _held(self, event: _Event | None, now: float) -> frozenset[str]:
        """The labels over the alert score for the alert hold at ``now``: one keyframe alerts nobody (a far-off
        shopper's bag read once as violence 0.97, on hall-bag)."""
        if event is None:
            return frozenset()
        return frozenset(label for label, since in event.over.items() if now - since >= self.settings.alert_hold)

    def _verdict(
        self,
        camera: _Camera,
        event: _Event | None,
        facts: Facts | None,
        caption: str | None,
        keyframe: Keyframe | None = None,
    ) -> Verdict:
        """The alert of the latest facts and caption, with the falls that validated models hold now."""
        trust = camera.outputs.trust
        falls = []
        if trust.validated("detector") and (keyframe.down > 0 if keyframe is not None else camera.fallen):
            falls.append("fall:detector")
        held = self._held(event, keyframe.frame.time if keyframe is not None else camera.down_seen)
        if facts is None:  # a fall held before the first keyframe was described
            nothing: Fact[tuple[str, ...]] = Fact(value=(), model="detector", validated=trust.validated("detector"))
            people = Fact(value=camera.presence.persons, model="detector", validated=trust.validated("detector"))
            facts = Facts(people=people, down=None, holding=nothing, labels=None)
        return judge(facts, caption, trust.validated("captioner"), tuple(falls), held, self.settings.alerts)

    def _raise(self, camera: _Camera, event: _Event, verdict: Verdict, now: float, seen: str) -> None:
        """Report an alert when ``verdict`` is above the event's alert so far; ``seen`` is what was seen, in words."""
        if LEVELS.index(verdict.level) <= LEVELS.index(event.alert):
            return
        event.alert = verdict.level
        name, language = camera.outputs.name, self.settings.language
        text = phrases.alert_text(language, name, level=verdict.level, kinds=verdict.kinds, description=seen)
        self._sink(
            AlertReport(
                event_id=event.id,
                camera=name,
                time=wall_time(now),
                level=verdict.level,
                reasons=verdict.reasons,
                kinds=verdict.kinds,
                text=text,
                caption=seen,
            )
        )
        if camera.event is event:
            self._note(camera, event, force=True)

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
