"""Truthful descriptions and alerts: a model speaks about a camera only where it was validated.

The reference classifier and captioner were trained on drawn figures; on a real camera they still run,
but their words never raise an alert and never make the first line of a caption, which is composed from
the facts of the validated models instead. Falls and classifier labels held for the alert hold are
alerts; objects of concern held by a person are facts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError
from appliance.events.describer import Keyframe
from appliance.events.facts import AlertSettings
from appliance.events.manager import held_by
from appliance.events.phrases import alert_text, describe
from appliance.events.reports import AlertReport, CaptionReport, EventReport, Report
from appliance.events.trust import Trust, world_of
from appliance.inference.detector import Detection
from appliance.inference.loader import load_models
from appliance.inference.settings import InferenceSettings
from tests.test_events import Clips, frame, manager, person
from tests.test_events import describe as described

REAL_DETECTOR = {"detector": "real", "classifier": "synthetic", "captioner": "synthetic"}
REAL_CAMERA = Trust(world="real", domains=REAL_DETECTOR)
FALL = 1  # the fallen-person class of the detectors below


def fallen(score: float = 0.9) -> Detection:
    return Detection((100.0, 300.0, 260.0, 360.0), score, FALL, "Fall")


def thing(label: str, class_id: int = 2) -> Detection:
    return Detection((110.0, 150.0, 130.0, 170.0), 0.8, class_id, label)  # inside person()'s box


def reports_of(reports: list[Report], kind: type) -> list:  # type: ignore[type-arg]
    return [r for r in reports if isinstance(r, kind)]


def test_a_camera_of_the_synthetic_world_validates_synthetic_models_and_any_other_only_real_ones() -> None:
    assert world_of("sim") == "synthetic"
    assert [world_of(s) for s in ("file", "rtsp", "http", "picamera2", "v4l2")] == ["real"] * 5
    assert REAL_CAMERA.validated("detector")
    assert not REAL_CAMERA.validated("captioner")
    older = Trust(world="real", domains={"detector": None})  # a manifest that does not say
    assert not older.validated("detector")
    assert not Trust(world="synthetic", domains={"detector": None}).validated("detector")


def test_on_a_real_camera_synthetic_words_raise_nothing_and_the_first_line_is_composed() -> None:
    """vtest.avi's failure, in small: pedestrians, and the synthetic captioner says a knife with 0.9."""
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    events = manager(reports, keyframes, {0: Clips()}, trust=REAL_CAMERA)
    for tick in range(30):
        events.on_detection(0, frame(tick, tick / 10), [person(), person(size=120)])
    for keyframe in keyframes:
        events.on_description(
            described(keyframe, "a group of people are fighting and one is holding a knife", {"violence": 0.96})
        )
    captions = reports_of(reports, CaptionReport)
    assert captions
    assert not reports_of(reports, AlertReport)
    for caption in captions:
        assert caption.caption == caption.composed == "2 people on cam0"
        assert caption.model_caption is not None
        assert caption.model_caption.text.endswith("holding a knife")
        assert not caption.model_caption.validated
        assert (caption.alert, caption.reasons) == ("none", ())
        assert (caption.facts.people.value, caption.facts.people.validated) == (2, True)
        assert caption.facts.labels is not None
        assert not caption.facts.labels.validated
    updates = [r for r in reports_of(reports, EventReport) if r.phase == "update"]
    assert updates[-1].alert == "none"
    assert updates[-1].facts == captions[-1].facts


def test_a_fall_held_by_the_detector_is_a_warning_and_one_frame_of_it_is_nothing() -> None:
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    events = manager(reports, keyframes, {0: Clips()}, trust=REAL_CAMERA, fall_classes=frozenset({FALL}))
    for tick in range(20):  # walking, one frame fallen (a bend, a mistake)
        events.on_detection(0, frame(tick, tick / 10), [fallen() if tick == 3 else person()])
    assert not reports_of(reports, AlertReport)
    for tick in range(20, 49):  # down from 2.0 s on: not yet held at 4.8 s
        events.on_detection(0, frame(tick, tick / 10), [fallen()])
    assert not reports_of(reports, AlertReport)
    for tick in range(49, 110):  # held 3 s at 5.0 s
        events.on_detection(0, frame(tick, tick / 10), [fallen()])
    [alert] = reports_of(reports, AlertReport)
    assert (alert.level, alert.reasons, alert.kinds) == ("warning", ("fall:detector",), ("fall",))
    assert alert.text == "Warning on cam0: someone is down. 1 person on cam0; one is lying on the ground"
    late = [k for k in keyframes if k.frame.time >= 5.0]
    events.on_description(described(late[0], "a person is lying on the floor", {"fall": 0.9}))
    caption = reports_of(reports, CaptionReport)[-1]
    assert caption.caption == "1 person on cam0; one is lying on the ground"
    assert caption.facts.down is not None
    assert (caption.facts.down.value, caption.facts.down.model, caption.facts.down.validated) == (1, "detector", True)
    assert len(reports_of(reports, AlertReport)) == 1  # the synthetic classifier's fall does not confirm it


def test_fall_boxes_of_different_people_do_not_add_up_to_a_fall() -> None:
    """vtest.avi's walkers, each scored fallen for a frame or two, one after another, in different places."""
    reports: list[Report] = []
    events = manager(reports, [], {0: Clips()}, trust=REAL_CAMERA, fall_classes=frozenset({FALL}))
    places = [(40.0 + 150 * k, 300.0, 160.0 + 150 * k, 360.0) for k in range(4)]
    for tick in range(80):  # 8 s, a fall box at every detection, a different place each 0.5 s
        x1, y1, x2, y2 = places[(tick // 5) % 4]
        events.on_detection(0, frame(tick, tick / 10), [person(), Detection((x1, y1, x2, y2), 0.35, FALL, "Fall")])
    assert not reports_of(reports, AlertReport)


def test_in_the_synthetic_world_the_classifier_held_fall_warns_and_with_the_detector_alarms() -> None:
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    events = manager(reports, keyframes, {0: Clips()})  # reference models: classifier validated, no fall class
    for tick in range(90):
        events.on_detection(0, frame(tick, tick / 10), [person()])
    start = keyframes[0].frame.time
    for keyframe in keyframes:
        events.on_description(described(keyframe, "a person is lying on the floor", {"fall": 0.9, "normal": 0.1}))
        held = keyframe.frame.time - start >= 3.0
        assert bool(reports_of(reports, AlertReport)) == held, f"keyframe {keyframe.frame.time - start:.1f} s in"
    [alert] = reports_of(reports, AlertReport)
    assert (alert.level, alert.reasons) == ("warning", ("fall:classifier",))

    reports.clear()
    keyframes.clear()
    both = manager(reports, keyframes, {0: Clips()}, fall_classes=frozenset({FALL}))
    for tick in range(90):
        both.on_detection(0, frame(tick, tick / 10), [fallen()])
    assert [a.level for a in reports_of(reports, AlertReport)] == ["warning"]  # the detector alone, at 3 s
    for keyframe in keyframes:
        both.on_description(described(keyframe, "a person is lying on the floor", {"fall": 0.9}))
    assert [a.level for a in reports_of(reports, AlertReport)] == ["warning", "alarm"]
    assert set(reports_of(reports, AlertReport)[-1].reasons) == {"fall:detector", "fall:classifier"}


def test_a_classifier_label_alone_alerts_only_once_held() -> None:
    """hall-bag's far-off shopper, read once as violence 0.97 while the caption said nothing of it: one
    keyframe alerts nobody; the same score over the alert hold (3 s) does."""
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    events = manager(reports, keyframes, {0: Clips()})
    for tick in range(100):
        events.on_detection(0, frame(tick, tick / 10), [person()])
    assert [k.frame.time for k in keyframes] == [0.0, 0.1, 2.1, 4.1, 6.1]
    first, *later = keyframes
    events.on_description(described(first, "nobody is in the corridor", {"normal": 0.03, "violence": 0.97}))
    events.on_description(described(later[0], "a person is walking in the corridor", {"normal": 0.9, "violence": 0.1}))
    assert not reports_of(reports, AlertReport), "one keyframe over the score, then under it"
    for keyframe in later[1:]:
        events.on_description(described(keyframe, "a person is standing in the corridor", {"violence": 0.9}))
    [alert] = reports_of(reports, AlertReport)
    assert (alert.level, alert.reasons) == ("warning", ("violence:0.85",))  # over 0.6 from 2.1 s, held at 6.1 s
    captions = reports_of(reports, CaptionReport)
    assert [c.alert for c in captions] == ["none", "none", "none", "none", "warning"]


def test_falls_raise_nothing_when_fall_alerts_are_off() -> None:
    reports: list[Report] = []
    events = manager(
        reports, [], {0: Clips()}, trust=REAL_CAMERA, fall_classes=frozenset({FALL}), alerts=AlertSettings(fall=False)
    )
    for tick in range(60):
        events.on_detection(0, frame(tick, tick / 10), [fallen()])
    assert not reports_of(reports, AlertReport)


def test_a_held_knife_alarms_with_a_knife_caption_and_a_held_bag_raises_nothing() -> None:
    objects = ("knife", "bag")
    reports: list[Report] = []
    keyframes: list[Keyframe] = []
    events = manager(reports, keyframes, {0: Clips()}, held_objects=objects)
    for tick in range(10):
        events.on_detection(0, frame(tick, tick / 10), [person(), thing("knife")])
    events.on_description(described(keyframes[0], "a person is holding a knife", {"violence": 0.1}))
    caption = reports_of(reports, CaptionReport)[-1]
    assert caption.facts.holding.value == ("knife",)
    assert [(a.level, a.reasons) for a in reports_of(reports, AlertReport)] == [
        ("alarm", ("word:knife", "object:knife"))
    ]

    reports.clear()
    keyframes.clear()
    events = manager(reports, keyframes, {0: Clips()}, held_objects=objects)
    for tick in range(10):
        events.on_detection(0, frame(tick, tick / 10), [person(), thing("bag")])
    events.on_description(described(keyframes[0], "a person with a bag is standing in the shop", {"violence": 0.1}))
    caption = reports_of(reports, CaptionReport)[-1]
    assert caption.facts.holding.value == ("bag",)
    assert caption.composed == "1 person on cam0; one is holding a bag"
    assert not reports_of(reports, AlertReport)


def test_an_object_beside_a_person_is_not_held() -> None:
    away = Detection((400.0, 100.0, 420.0, 120.0), 0.8, 2, "knife")
    assert held_by([person()], [thing("knife"), away]) == ("knife",)
    assert held_by([], [thing("knife")]) == ()


def test_descriptions_and_alert_texts_in_english_and_korean() -> None:
    assert describe("en", "Front path", people=3, down=1, holding=(), fighting=False) == (
        "3 people on Front path; one is lying on the ground"
    )
    assert describe("en", "hall", people=2, down=2, holding=("cell phone",), fighting=True) == (
        "2 people on hall; 2 are lying on the ground; one is holding a phone; they appear to be fighting"
    )
    korean = describe("ko", "현관", people=3, down=1, holding=("knife",), fighting=False)
    assert korean == "현관: 3명, 1명이 쓰러져 있음, 칼을(를) 든 사람 있음"
    text = alert_text("ko", "현관", level="alarm", kinds=("fall",), description=korean)
    assert text == f"[경보] 현관: 쓰러진 사람. {korean}"


def test_the_alert_text_follows_the_configured_language() -> None:
    reports: list[Report] = []
    events = manager(reports, [], {0: Clips()}, trust=REAL_CAMERA, fall_classes=frozenset({FALL}), language="ko")
    for tick in range(60):
        events.on_detection(0, frame(tick, tick / 10), [fallen()])
    [alert] = reports_of(reports, AlertReport)
    assert alert.text == "[주의] cam0: 쓰러진 사람. cam0: 1명, 1명이 쓰러져 있음"


def test_an_unknown_language_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="APPLIANCE_LANGUAGE"):
        load_config({"APPLIANCE_LANGUAGE": "fr"})
    assert load_config({"APPLIANCE_LANGUAGE": "ko"}).language == "ko"


def test_a_manifest_without_a_domain_loads_validated_nowhere_with_one_log_line(
    models_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = models_copy / "manifest.json"
    data = json.loads(path.read_text())
    for slot in data["slots"].values():
        slot.pop("domain", None)
    data["slots"]["detector"]["domain"] = {"kind": "synthetic", "data": "toys"}
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, "appliance.inference.loader"):
        models = load_models(models_copy, InferenceSettings(threads=1))
    said = [r.getMessage() for r in caplog.records if "does not say what it was trained on" in r.getMessage()]
    assert len(said) == len(models.slots()) - 1
    assert models.manifest.slots["detector"].domain is not None
    assert models.manifest.slots["classifier"].domain is None


def test_a_domain_of_another_kind_is_refused_naming_the_field(models_copy: Path) -> None:
    from appliance.errors import ModelError
    from appliance.inference.manifest import read_manifest

    path = models_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["slots"]["detector"]["domain"] = {"kind": "imaginary", "data": "dreams"}
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"slots\.detector\.domain\.kind: expected 'synthetic' or 'real'"):
        read_manifest(models_copy)
