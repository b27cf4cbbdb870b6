"""Scheduling, presence and events: when the detector looks, when a person counts, what gets reported."""

from __future__ import annotations

import gc
import json
import math
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.cameras.source import Frame
from appliance.events.describer import Describer, Description, Keyframe
from appliance.events.facts import caption_words
from appliance.events.manager import CameraOutputs, EventManager, EventSettings
from appliance.events.presence import PresenceSettings, PresenceTracker
from appliance.events.reports import AlertReport, CaptionReport, EventReport, PersonState, Report
from appliance.events.trust import Trust
from appliance.inference.captioner import Caption, Captioner
from appliance.inference.detector import Detection
from appliance.inference.imaging import Image
from appliance.motion import BoxMotion, MotionGate
from appliance.mqtt.topics import Topics
from appliance.notify import Notifier
from appliance.scheduler import MOTION_EVERY, Scheduler

AREA = 640.0 * 480.0
SYNTHETIC_WORLD = Trust(
    world="synthetic", domains={"detector": "synthetic", "classifier": "synthetic", "captioner": "synthetic"}
)


def person(score: float = 0.9, size: float = 100.0) -> Detection:
    return Detection((100.0, 100.0, 100.0 + size / 2, 100.0 + size), score, 0, "person")


def frame(index: int, time: float, camera: int = 0, value: int | None = None) -> Frame:
    """A plain grey picture of ``value``; without one a busy scene, a new random picture at every index, so
    that every box lies where the picture changed."""
    if value is not None:
        return Frame(camera, index, time, np.full((480, 640, 3), value, np.uint8))
    rng = np.random.default_rng(index)
    return Frame(camera, index, time, rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))


def moving(_: Detection) -> bool:
    """What a busy scene's box motion says of every box."""
    return True


# --- motion gating and the scheduler


def test_motion_gate_ignores_sensor_noise_and_sees_a_person_sized_change() -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(60, 200, (480, 640, 3), dtype=np.uint8)
    gate = MotionGate(share=0.004)
    assert gate.moved(scene)  # the first frame is news
    for sigma in (9, 9, 9, 15, 15):  # night-level sensor noise on a still scene
        noisy = np.clip(scene + rng.normal(0, sigma, scene.shape), 0, 255).astype(np.uint8)
        assert not gate.moved(noisy)
    walked_in = scene.copy()
    walked_in[200:400, 300:360] = 20  # a dark figure, 60 x 200 px
    assert gate.moved(walked_in)
    assert not gate.moved(walked_in)


class Camera:
    """A grabber's newest-frame slot as the scheduler sees it."""

    def __init__(self, slot: int) -> None:
        self.slot, self.frame, self.index = slot, None, -1
        self.value = 0

    def advance(self, time: float, moved: bool = False) -> None:
        self.index += 1
        if moved:
            self.value = (self.value + 90) % 256
        self.frame = frame(self.index, time, self.slot, self.value)  # type: ignore[assignment]

    def latest(self) -> Frame | None:
        return self.frame


def test_a_still_empty_scene_is_detected_only_every_idle_period() -> None:
    camera = Camera(0)
    scheduler = Scheduler([(0, camera.latest)], detect_fps=10, idle_every=5.0, motion_share=0.004)
    detected = []
    for tick in range(200):  # 20 s at 10 ticks a second, a new still frame each tick
        now = tick / 10
        camera.advance(now)
        decision = scheduler.next(now)
        if decision is not None:
            detected.append((now, decision.reason))
    motion = [t for t, reason in detected if reason == "motion"]
    idle = [t for t, reason in detected if reason == "idle"]
    assert motion == pytest.approx([tick / 10 for tick in range(21)])  # the first frame, then MOTION_LINGER s
    assert idle == pytest.approx([7.0, 12.0, 17.0])  # then one detection every 5 s


def test_a_still_scene_is_compared_for_motion_every_quarter_second_whatever_the_tick_rate() -> None:
    cameras = [Camera(0), Camera(1)]
    scheduler = Scheduler([(c.slot, c.latest) for c in cameras], detect_fps=20, idle_every=60.0, motion_share=0.004)
    arrived, compared = None, {}
    for tick in range(200):  # 10 s at 20 ticks a second, a new frame from each camera every tick
        now = tick / 20
        for camera in cameras:
            camera.advance(now, moved=(camera.slot == 1 and tick == 151))
        decision = scheduler.next(now)
        if decision is not None and decision.reason == "motion" and decision.frame.camera == 1 and now > 7.0:
            arrived = now if arrived is None else arrived
        compared[tick] = scheduler.compared
    assert compared[140] - compared[60] == 2 * 4.0 / MOTION_EVERY  # from 3 s to 7 s: past the first frame's motion
    assert arrived is not None
    assert 7.55 <= arrived <= 7.55 + MOTION_EVERY  # someone walking in is seen at the camera's next comparison


def test_motion_and_a_watched_camera_are_due_at_every_tick() -> None:
    camera = Camera(0)
    scheduler = Scheduler([(0, camera.latest)], detect_fps=10, idle_every=60.0, motion_share=0.004)
    camera.advance(0.0)
    assert scheduler.next(0.0) is not None
    camera.advance(10.0)
    assert scheduler.next(10.0) is None  # still and not yet idle for 60 s
    camera.advance(10.0 + MOTION_EVERY, moved=True)  # the next motion comparison
    decision = scheduler.next(10.0 + MOTION_EVERY)
    assert decision is not None
    assert decision.reason == "motion"
    scheduler.set_watched(0, True)
    for tick in range(1, 50):
        camera.advance(20 + tick / 10)
        decision = scheduler.next(20 + tick / 10)
        assert decision is not None
        assert decision.reason == "watched"


def test_round_robin_shares_the_detector_and_never_detects_a_frame_twice() -> None:
    cameras = [Camera(0), Camera(1)]
    scheduler = Scheduler([(c.slot, c.latest) for c in cameras], detect_fps=10, idle_every=60.0, motion_share=0.0)
    picked = []
    for tick in range(20):
        for camera in cameras:
            camera.advance(tick / 10)
        decision = scheduler.next(tick / 10)
        assert decision is not None
        picked.append(decision.frame.camera)
    assert picked == [0, 1] * 10
    assert scheduler.next(2.0) is not None  # camera 0's newest frame was not yet seen
    assert scheduler.next(2.0) is None  # both newest frames detected: nothing new to look at


# --- presence


def test_presence_needs_k_of_n_and_ends_after_the_hold() -> None:
    tracker = PresenceTracker(PresenceSettings(hits=2, window=3, hold=2.0), person_classes=frozenset({0}))
    assert tracker.update([person()], AREA, 0.0, moving) is None  # one sighting is not enough
    assert tracker.update([], AREA, 0.1, moving) is None
    change = tracker.update([person()], AREA, 0.2, moving)
    assert change is not None
    assert (change.present, change.time) == (True, 0.2)
    assert tracker.update([], AREA, 1.0, moving) is None  # a missed detection does not end it
    assert tracker.update([], AREA, 2.1, moving) is None
    change = tracker.update([], AREA, 2.2, moving)
    assert change is not None
    assert (change.present, change.time) == (False, 0.2)  # gone since the last sighting


def test_low_scores_small_boxes_and_other_classes_do_not_count() -> None:
    settings = PresenceSettings(hits=1, window=1, min_score=0.5, confirm_score=0.5, min_area=0.01)
    tracker = PresenceTracker(settings, person_classes=frozenset({0}))
    bag = Detection((0.0, 0.0, 200.0, 200.0), 0.95, 1, "bag")
    assert tracker.update([person(score=0.45), person(size=40), bag], AREA, 0.0, moving) is None
    assert not tracker.present
    assert tracker.update([person(score=0.6, size=120)], AREA, 0.1, moving) is not None


def test_unsure_boxes_start_no_presence_but_keep_one_that_sure_boxes_started() -> None:
    """Hysteresis on the score: a shadow that passes min_score now and then, however long, is no person;
    a person confirmed by sure boxes stays present through a stretch of unsure ones."""
    settings = PresenceSettings(hits=2, window=4, hold=2.0, min_score=0.5, confirm_score=0.7)
    tracker = PresenceTracker(settings, person_classes=frozenset({0}))
    for step in range(40):  # ten seconds of boxes from 0.50 to 0.69
        assert tracker.update([person(score=0.5 + 0.19 * step / 39)], AREA, step * 0.25, moving) is None
    assert not tracker.present
    assert tracker.persons == 1  # counted all the same, for the event's figures once it starts
    assert tracker.update([person(score=0.75)], AREA, 10.0, moving) is None  # one sure sighting is not enough
    assert tracker.update([person(score=0.6)], AREA, 10.25, moving) is None
    change = tracker.update([person(score=0.72)], AREA, 10.5, moving)
    assert change is not None
    assert (change.present, change.time) == (True, 10.5)
    for step in range(1, 17):  # four seconds of unsure boxes, twice the hold
        assert tracker.update([person(score=0.55)], AREA, 10.5 + step * 0.25, moving) is None
    assert tracker.present
    assert tracker.update([person(score=0.45)], AREA, 15.0, moving) is None  # below min_score: nobody
    change = tracker.update([], AREA, 16.5, moving)
    assert change is not None
    assert (change.present, change.time) == (False, 14.5)  # the last box of at least min_score


def test_a_camera_is_watched_from_a_sure_sighting_until_presence_is_decided() -> None:
    """A small person far away barely moves the motion gate, so an idle check (every 5 s) may be the first
    to find them: from then the camera must be detected at every tick, or the sighting that confirms
    them comes an idle period later."""
    reports: list[Report] = []
    events = manager(reports, [], {0: Clips()}, presence=PresenceSettings(hits=2, window=4))
    assert not events.watch(0)
    events.on_detection(0, frame(0, 0.0), [person(score=0.6)])  # an unsure box (a shadow) is not followed
    assert not events.watch(0)
    events.on_detection(0, frame(50, 5.0), [person(score=0.9)])  # the idle check finds someone
    assert events.watch(0)
    for tick in range(1, 3):  # missed by the next two detections: still within the window
        events.on_detection(0, frame(50 + tick, 5.0 + tick / 8), [])
        assert events.watch(0)
    events.on_detection(0, frame(53, 5.375), [person(score=0.85)])  # confirmed: present
    assert [r.present for r in reports if isinstance(r, PersonState)] == [True]
    assert events.watch(0)
    for tick in range(4, 8):  # nobody again: still present (the hold), so still watched
        events.on_detection(0, frame(50 + tick, 5.0 + tick / 8), [])
    assert events.watch(0)


def test_a_sure_sighting_that_is_not_repeated_stops_being_watched() -> None:
    events = manager([], [], {0: Clips()}, presence=PresenceSettings(hits=2, window=4))
    events.on_detection(0, frame(0, 0.0), [person(score=0.9)])
    for tick in range(1, 4):
        events.on_detection(0, frame(tick, tick / 8), [])
        assert events.watch(0)
    events.on_detection(0, frame(4, 0.5), [])  # the sighting has left the window of 4
    assert not events.watch(0)


def test_a_silent_camera_still_ends_presence_after_the_hold() -> None:
    tracker = PresenceTracker(PresenceSettings(hits=1, window=1, hold=3.0), person_classes=frozenset({0}))
    tracker.update([person()], AREA, 0.0, moving)
    assert tracker.expire(2.9) is None
    change = tracker.expire(3.0)
    assert change is not None
    assert not change.present


# --- events


class Clips:
    """A recorder as the manager sees it, noting the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self, path: Path) -> None:
        self.calls.append(f"begin {path.name}")

    def end(self) -> Path | None:
        self.calls.append("end")
        return Path("/clips/done.mp4")


def manager(
    reports: list[Report],
    keyframes: list[Keyframe],
    clips: dict[int, Clips],
    trigger: str = "any",
    presence: PresenceSettings | None = None,
    trust: Trust = SYNTHETIC_WORLD,
    fall_classes: frozenset[int] = frozenset(),
    **settings: Any,
) -> EventManager:
    """An event manager over the cameras of ``clips`` (slot -> recorder), with the reference models' trust
    (every model synthetic, every camera of the synthetic world) unless ``trust`` says otherwise."""
    chosen = EventSettings(
        keyframe_every=2.0,
        postroll=3.0,
        trigger=trigger,
        presence=presence or PresenceSettings(hits=1, window=1, hold=1.0),
        **settings,
    )
    outputs = {
        slot: CameraOutputs(f"cam{slot}", recorder, lambda event, _t: Path(f"/clips/{event}.mp4"), trust)
        for slot, recorder in clips.items()
    }
    return EventManager(
        chosen, outputs, frozenset({0} | fall_classes), keyframes.append, reports.append, fall_classes=fall_classes
    )


def test_an_event_starts_records_sends_keyframes_and_ends_after_the_post_roll() -> None:
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    clips = Clips()
    events = manager(reports, keyframes, {0: clips})
    for tick in range(50):  # a person for 5 s
        events.on_detection(0, frame(tick, tick / 10), [person(score=0.8 + tick / 1000)])
    assert [type(r) for r in reports[:2]] == [PersonState, EventReport]
    start = reports[1]
    assert isinstance(start, EventReport)
    assert start.phase == "start"
    assert start.clip == f"/clips/{start.event_id}.mp4"
    assert clips.calls == [f"begin {start.event_id}.mp4"]
    assert [k.frame.index for k in keyframes] == [0, 20, 40]  # at once, then every 2 s
    for tick in range(50, 100):  # gone: absent after the 1 s hold, ended 3 s after the last sighting
        events.on_detection(0, frame(tick, tick / 10), [])
    off = [r for r in reports if isinstance(r, PersonState) and not r.present]
    end = [r for r in reports if isinstance(r, EventReport) and r.phase == "end"]
    assert len(off) == 1
    assert len(end) == 1
    assert end[0].clip == "/clips/done.mp4"
    assert clips.calls[-1] == "end"
    assert end[0].time - end[0].ended == pytest.approx(3.0, abs=0.15)  # type: ignore[operator]
    assert end[0].max_persons == 1


def test_an_event_seen_only_at_its_start_lasts_zero_seconds_not_less() -> None:
    reports: list[Report] = []
    events = manager(reports, [], {0: Clips()})
    events.on_detection(0, frame(0, 1.0), [person()])
    for tick in range(11, 60):
        events.on_detection(0, frame(tick, tick / 10), [])
    (end,) = [r for r in reports if isinstance(r, EventReport) and r.phase == "end"]
    assert end.ended == end.started
    (message,) = Topics("t", "pi").messages_for(end)
    assert math.copysign(1.0, json.loads(message.payload)["duration"]) == 1.0  # 0.0, not -0.0


def test_an_ended_event_holds_no_frame() -> None:
    """Ended events are kept ten minutes for late descriptions; their frames must not be: a busy
    day would pile up a frame per event (measured: 35 MB after 50 events at 640x480)."""
    keyframes: list[Keyframe] = []
    events = manager([], keyframes, {0: Clips()})
    images = []
    for tick in range(25):  # a person for 2.5 s: a keyframe at once, then the best frame since waits
        seen = frame(tick, tick / 10)
        images.append(weakref.ref(seen.image))
        events.on_detection(0, seen, [person(score=0.8 + tick / 1000)])
    for tick in range(25, 80):  # gone, and the event ended
        events.on_detection(0, frame(tick, tick / 10), [])
    keyframes.clear()
    del seen
    gc.collect()
    assert [ref for ref in images if ref() is not None] == []


def test_a_person_back_within_the_post_roll_continues_the_same_event() -> None:
    reports: list[Report] = []
    events = manager(reports, [], {0: Clips()})
    timeline = [(t, bool(t < 10 or t >= 25)) for t in range(40)]
    for tick, seen in timeline:
        events.on_detection(0, frame(tick, tick / 10), [person()] if seen else [])
    phases = [r.phase for r in reports if isinstance(r, EventReport)]
    assert phases == ["start"]  # gone 1.5 s, less than hold + post-roll
    states = [r.present for r in reports if isinstance(r, PersonState)]
    assert states == [True, False, True]


def test_with_trigger_both_a_person_in_one_view_starts_nothing() -> None:
    reports: list[Report] = []
    events = manager(reports, [], {0: Clips(), 1: Clips()}, trigger="both")
    for tick in range(20):
        events.on_detection(0, frame(tick, tick / 10), [person()])
        events.on_detection(1, frame(tick, tick / 10, camera=1), [])
    assert reports == []
    for tick in range(20, 30):
        events.on_detection(0, frame(tick, tick / 10), [person()])
        events.on_detection(1, frame(tick, tick / 10, camera=1), [person()])
    started = [r.camera for r in reports if isinstance(r, EventReport) and r.phase == "start"]
    assert sorted(started) == ["cam0", "cam1"]
    for tick in range(30, 60):  # camera 1 loses the person; camera 0's event goes on while it sees them
        events.on_detection(0, frame(tick, tick / 10), [person()])
        events.on_detection(1, frame(tick, tick / 10, camera=1), [])
    ended = [r.camera for r in reports if isinstance(r, EventReport) and r.phase == "end"]
    assert ended == ["cam1"]
    assert [r.present for r in reports if isinstance(r, PersonState) and r.camera == "cam0"] == [True]


def describe(keyframe: Keyframe, caption: str, labels: dict[str, float]) -> Description:
    return Description(keyframe, Caption(caption, (1, 2), -0.2), labels, 1.0, 2.0, keyframe.frame.time + 0.5)


def test_the_describer_signals_each_finished_description_so_the_main_loop_need_not_poll() -> None:
    describer = Describer(classifier=None, captioner=None)
    describer.start()
    try:
        assert not describer.finished.wait(0.05)  # nothing submitted, nothing to wake for
        describer.submit(Keyframe("e1", 0, frame(0, 0.0), ((10.0, 10.0, 50.0, 120.0),), 0.9))
        assert describer.finished.wait(5.0)
        assert [d.keyframe.event_id for d in describer.results()] == ["e1"]
    finally:
        describer.stop()


def test_captions_carry_smoothed_labels_and_alerts_rise_once_per_level() -> None:
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    events = manager(reports, keyframes, {0: Clips()})
    for tick in range(60):
        events.on_detection(0, frame(tick, tick / 10), [person()])
    first, second, third = keyframes
    events.on_description(describe(first, "a person is standing in the shop", {"normal": 0.9, "violence": 0.1}))
    events.on_description(describe(second, "a person is holding a knife in the shop", {"normal": 0.3, "violence": 0.7}))
    events.on_description(describe(third, "a person is holding a knife in the shop", {"normal": 0.1, "violence": 0.9}))
    captions = [r for r in reports if isinstance(r, CaptionReport)]
    assert [c.alert for c in captions] == ["none", "warning", "alarm"]
    assert captions[1].labels["violence"] == pytest.approx(0.4)  # 0.5 * 0.7 + 0.5 * 0.1
    assert captions[2].labels["violence"] == pytest.approx(0.65)
    assert captions[2].reasons == ("word:knife", "violence:0.65")
    assert captions[0].latency == pytest.approx(0.5)
    alerts = [r for r in reports if isinstance(r, AlertReport)]
    assert [(a.level, a.caption) for a in alerts] == [
        ("warning", "a person is holding a knife in the shop"),
        ("alarm", "a person is holding a knife in the shop"),
    ]
    updates = [r for r in reports if isinstance(r, EventReport) and r.phase == "update"]
    assert updates[-1].alert == "alarm"


def test_alert_words_match_whole_words_only() -> None:
    assert caption_words("a person stands by the fireplace", ("fire", "gun")) == []
    assert caption_words("a man with a gun.", ("fire", "gun")) == ["gun"]


def test_stopping_ends_open_events_and_turns_the_sensor_off() -> None:
    reports: list[Report] = []
    clips = Clips()
    events = manager(reports, [], {0: clips})
    events.on_detection(0, frame(0, 0.0), [person()])
    events.close(0.5)
    assert clips.calls[-1] == "end"
    assert isinstance(reports[-2], EventReport)
    assert reports[-2].phase == "end"
    assert reports[-1] == PersonState("cam0", False, reports[-1].time)


# --- systemd notification


def test_notifier_speaks_the_sd_notify_protocol_to_a_real_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        notifier.ready("2 cameras")
        assert server.recv(256) == b"READY=1\nSTATUS=2 cameras"
        notifier.watchdog(now=10.0)
        notifier.watchdog(now=10.5)  # under half the period: not sent again
        notifier.watchdog(now=11.0)
        assert server.recv(64) == b"WATCHDOG=1"
        assert server.recv(64) == b"WATCHDOG=1"
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.recv(64)
        notifier.close()
    finally:
        server.close()


def test_without_systemd_the_notifier_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_period is None
    notifier.ready("x")
    notifier.watchdog()


# --- a sure box must move to make a person present


def _scene(figure_at: int | None) -> np.ndarray:
    """A textured still scene, with a dark 60 x 200 px figure whose left edge is at ``figure_at``."""
    image = np.random.default_rng(7).integers(60, 200, (480, 640, 3), dtype=np.uint8)
    if figure_at is not None:
        image[200:400, figure_at : figure_at + 60] = 20
    return image


def _box_at(left: int, score: float = 0.9) -> Detection:
    return Detection((float(left), 200.0, float(left + 60), 400.0), score, 0, "person")


def test_a_still_picture_scored_as_a_sure_person_makes_nobody_present() -> None:
    """A photo on the wall or a fruit bowl that the detector scores like a person, frame after frame."""
    tracker = PresenceTracker(PresenceSettings(hits=2, window=4), person_classes=frozenset({0}))
    motion = BoxMotion()
    picture = _scene(300)
    for step in range(40):
        motion.update(picture)
        assert tracker.update([_box_at(300)], AREA, step * 0.125, motion.moved) is None
    assert not tracker.present
    assert tracker.persons == 1  # counted, for an event someone else starts


def test_a_person_walking_in_is_present_and_stays_present_standing_still() -> None:
    tracker = PresenceTracker(PresenceSettings(hits=2, window=4, hold=2.0), person_classes=frozenset({0}))
    motion = BoxMotion()
    motion.update(_scene(None))  # the empty room first
    changes = []
    for step, left in enumerate((100, 108, 116, 124)):  # 8 px a detection: a slow walk
        motion.update(_scene(left))
        changes.append(tracker.update([_box_at(left)], AREA, step * 0.125, motion.moved))
    assert [c.present for c in changes if c is not None] == [True]
    for step in range(4, 40):  # then standing still for 4.5 s, twice the hold
        motion.update(_scene(124))
        assert tracker.update([_box_at(124)], AREA, step * 0.125, motion.moved) is None
    assert tracker.present


def test_without_the_motion_rule_a_still_sure_box_makes_a_person_present() -> None:
    tracker = PresenceTracker(PresenceSettings(hits=2, window=4, moving=False), person_classes=frozenset({0}))
    motion = BoxMotion()
    for step in range(2):
        motion.update(_scene(300))
        change = tracker.update([_box_at(300)], AREA, step * 0.125, motion.moved)
    assert change is not None
    assert change.present


class _BlockingCaptioner(Captioner):
    """A captioner that never finishes until released: a describer hung in a model."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    @property
    def models(self) -> dict[str, Any]:
        return {}

    def caption(self, frame: Image) -> Caption:
        self.entered.set()
        self.release.wait()
        return Caption("done", (), -0.5)


def test_a_describer_stuck_on_one_keyframe_is_told_apart_from_a_busy_one() -> None:
    captioner = _BlockingCaptioner()
    describer = Describer(None, captioner)
    describer.start()
    try:
        assert not describer.stuck(time.monotonic() + 120.0, 60.0)  # idle: waiting for work is no hang
        describer.submit(Keyframe("e", 0, frame(0, 0.0), (), 0.9))
        assert captioner.entered.wait(5)
        now = time.monotonic()
        assert not describer.stuck(now + 5.0, 60.0)
        assert describer.stuck(now + 61.0, 60.0)
    finally:
        captioner.release.set()
        describer.stop()
    assert describer.stuck(time.monotonic(), 60.0)  # a thread that has ended is stuck for good
