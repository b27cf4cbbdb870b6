"""`appliance run` end to end: the synthetic world as camera, the reference models, a real broker, real clips.

The service runs as a real process, as systemd runs it: its env file, its notify socket, SIGTERM.
What a subscriber receives is checked against the world's ground truth.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from appliance.sim.captions import parse
from appliance.sim.render import Renderer
from appliance.sim.scenario import load_scenario
from tests.broker import Broker, Collector
from tests.service_process import run_service, start_service

pytestmark = pytest.mark.slow  # the service in real time on the synthetic world: 4 minutes

ROOT = Path(__file__).resolve().parents[1]

# One room: someone walks in 3 s after the start, stands, and leaves; 20 s in all.
VISIT = {
    "description": "A person walks into a room, stands at the table and leaves.",
    "fps": 10,
    "duration": 20,
    "resolution": [640, 480],
    "caption_every": 2.0,
    "places": {"room": {"kind": "room", "x": [0, 6], "z": [0, 6]}},
    "cameras": [{"place": "room", "at": [0.3, 0.3], "height": 2.5, "yaw": 40, "pitch": 22, "fov": 80}],
    "people": [
        {
            "id": "visitor",
            "shirt": "green",
            "start": 3,
            "script": [
                {"enter": [5.5, 4.5]},
                {"walk": [[3.0, 3.5]]},
                {"stand": 5},
                {"walk": [[5.6, 2.0]]},
                {"leave": True},
            ],
        }
    ],
}


@dataclass
class Run:
    status: int
    subscriber: Collector
    notifications: list[tuple[float, str]]
    data: Path
    stderr: str
    scenario: Path


@pytest.fixture(scope="module")
def visit_run(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("service")
    scenario = work / "visit.json"
    scenario.write_text(json.dumps(VISIT))
    data = work / "data"
    env_file = work / "appliance.env"
    env_file.write_text(
        "\n".join(
            [
                f"APPLIANCE_CAMERA_0=sim:{scenario}",
                f"APPLIANCE_CAMERA_1=file:{work / 'unplugged.mp4'}",  # a camera that is not there
                "APPLIANCE_CAMERA_1_NAME=door",
                "APPLIANCE_MQTT_HOST=127.0.0.1",
                f"APPLIANCE_MQTT_PORT={broker.port}",
                "APPLIANCE_MQTT_PREFIX=test",
                "APPLIANCE_DEVICE_ID=pi",
                f"APPLIANCE_DATA_DIR={data}",
                "APPLIANCE_PREROLL=2",
                "APPLIANCE_POSTROLL=2",
                "APPLIANCE_PRESENCE_HOLD=2",
                "APPLIANCE_KEYFRAME_EVERY=2",
                "APPLIANCE_STATS_EVERY=3",
                "APPLIANCE_THREADS=1",
            ]
        )
        + "\n"
    )
    notify_path = str(work / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    notifications: list[tuple[float, str]] = []
    subscriber = Collector(broker, "test/#", "homeassistant/#")
    process = start_service(env_file, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="4000000")
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    reader.start()
    deadline, stop_at = time.monotonic() + 60, float("inf")
    try:
        # camera 1 is never there, so the service runs until it is told to stop, as under systemd
        while time.monotonic() < min(deadline, stop_at):
            if stop_at == float("inf") and [m.payload for m in subscriber.on("test/pi/cam0/person")][-2:] == [
                "ON",
                "OFF",
            ]:
                stop_at = time.monotonic() + 4.0  # the post-roll, the last caption, a stats period
            with contextlib.suppress(TimeoutError):
                notifications.append((time.time(), notify.recv(512).decode()))
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        notify.close()
    reader.join(5)
    time.sleep(0.5)
    run = Run(status, subscriber, notifications, data, "".join(stderr), scenario)
    yield run
    subscriber.close()


def json_on(run: Run, topic: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in run.subscriber.on(topic)]


def first_person_time(run: Run) -> float:
    """Seconds from the scenario's start to the first frame with a person who must be found."""
    renderer = Renderer(load_scenario(str(run.scenario)), 0, 0)
    for index in range(renderer.scenario.frames):
        if renderer.frame(index).truth.counted:
            return index / renderer.scenario.fps
    raise AssertionError("the scenario shows nobody")


def test_the_service_stops_cleanly_on_sigterm(visit_run: Run) -> None:
    assert visit_run.status == 0, visit_run.stderr[-3000:]
    assert "Traceback" not in visit_run.stderr


def test_availability_is_online_while_running_and_offline_after(visit_run: Run) -> None:
    status = [m.payload for m in visit_run.subscriber.on("test/pi/status")]
    assert status[0] == "online"
    assert status[-1] == "offline"


def test_systemd_hears_ready_and_watchdog_pings_while_the_service_runs(visit_run: Run) -> None:
    states = [text for _, text in visit_run.notifications]
    assert states, visit_run.stderr[-2000:]
    assert any(text.startswith("READY=1") for text in states)
    ready = next(i for i, text in enumerate(states) if text.startswith("READY=1"))
    pings = [t for t, text in visit_run.notifications[ready:] if text == "WATCHDOG=1"]
    assert len(pings) >= 5
    assert max(b - a for a, b in itertools.pairwise(pings)) < 4.0  # within WATCHDOG_USEC


def test_the_person_sensor_turns_on_soon_after_the_person_appears(visit_run: Run) -> None:
    person = visit_run.subscriber.on("test/pi/cam0/person")
    assert [m.payload for m in person] == ["OFF", "ON", "OFF"]  # OFF from the start: nobody seen yet
    camera = json_on(visit_run, "test/pi/cam0/state")
    assert camera[0]["state"] == "ok"
    # the camera's first frame is the scenario's time 0
    started = float(camera[0]["ts"])  # type: ignore[arg-type]
    latency = person[1].at - (started + first_person_time(visit_run))
    assert 0 < latency < 2.0


def test_one_event_with_a_finished_clip_covering_pre_and_post_roll(visit_run: Run) -> None:
    events = json_on(visit_run, "test/pi/cam0/event")
    phases = [e["phase"] for e in events]
    assert phases[0] == "start"
    assert phases[-1] == "end"
    assert set(phases[1:-1]) <= {"update"}
    start, end = events[0], events[-1]
    assert start["event_id"] == end["event_id"]
    assert end["reason"] == "gone"
    clip = Path(str(end["clip"]))
    assert clip.exists()
    assert clip.parent.parent.parent == visit_run.data / "clips"
    assert not list((visit_run.data / "clips").rglob("*.part"))
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.time for f in container.decode(stream)]
    covered = 2.0 + float(end["duration"]) + 2.0  # type: ignore[arg-type]  # pre-roll, presence, post-roll
    assert frames[-1] - frames[0] == pytest.approx(covered, abs=1.5)


def test_captions_describe_the_event_in_the_grammar_of_the_world(visit_run: Run) -> None:
    captions = json_on(visit_run, "test/pi/cam0/caption")
    event_id = json_on(visit_run, "test/pi/cam0/event")[0]["event_id"]
    assert len(captions) >= 3  # a keyframe every 2 s of a ~8 s visit
    for caption in captions:
        assert caption["event_id"] == event_id
        assert parse(str(caption["caption"])) is not None, caption["caption"]
        assert sorted(caption["labels"]) == ["fall", "normal", "violence"]  # type: ignore[call-overload]
    facts = [parse(str(c["caption"])) for c in captions]
    assert any(f is not None and f.place == "room" for f in facts)


def test_a_missing_camera_is_reported_while_the_other_keeps_working(visit_run: Run) -> None:
    door = json_on(visit_run, "test/pi/door/state")
    assert door
    assert door[0]["state"] == "failed"
    assert "unplugged.mp4" in str(door[0]["error"])


def test_stats_report_rates_timings_and_the_outbox(visit_run: Run) -> None:
    stats = json_on(visit_run, "test/pi/stats")
    assert len(stats) >= 3
    # whole periods only: no rate above the configured 8 detections a second (default APPLIANCE_DETECT_FPS)
    assert all(0 <= float(s["detections_per_s"]) <= 8.5 for s in stats), [s["detections_per_s"] for s in stats]  # type: ignore[arg-type]
    last = stats[-1]
    assert float(last["detections_per_s"]) > 0  # type: ignore[arg-type]
    assert float(last["ms"]["detect"]) > 0  # type: ignore[index]
    assert last["outbox_depth"] == 0


def test_home_assistant_discovers_the_person_sensor(visit_run: Run) -> None:
    configs = [m for m in visit_run.subscriber.messages if m.topic == "homeassistant/device/test_pi/config"]
    assert configs, "no device config"
    person = json.loads(configs[-1].payload)["components"]["cam0_person"]
    assert (person["platform"], person["state_topic"]) == ("binary_sensor", "test/pi/cam0/person")


def run_shipped(broker: Broker, folder: Path, scenario: str, prefix: str, timeout: float) -> Collector:
    """`appliance run` on both views of a shipped scenario, in real time, to its end (both sim cameras end
    with the scenario, and the service with them); returns the collector of everything under ``prefix``."""
    env_file = folder / "appliance.env"
    env_file.write_text(
        f"APPLIANCE_CAMERA_0=sim:{scenario}?view=0\n"
        f"APPLIANCE_CAMERA_1=sim:{scenario}?view=1\n"
        "APPLIANCE_MQTT_HOST=127.0.0.1\n"
        f"APPLIANCE_MQTT_PORT={broker.port}\n"
        f"APPLIANCE_MQTT_PREFIX={prefix}\n"
        "APPLIANCE_DEVICE_ID=pi\n"
        f"APPLIANCE_DATA_DIR={folder / 'data'}\n"
        "APPLIANCE_THREADS=1\n"
    )
    subscriber = Collector(broker, f"{prefix}/#")
    result = run_service(env_file, timeout=timeout)
    if result.returncode != 0:
        subscriber.close()
        pytest.fail(f"appliance run exited with {result.returncode}: {result.stderr[-3000:]}")
    # the last message the service sends
    subscriber.wait_for(lambda m: any(x.topic == f"{prefix}/pi/status" and x.payload == "offline" for x in m))
    return subscriber


def test_a_fight_raises_an_alert_through_the_broker(broker: Broker, tmp_path: Path) -> None:
    """The shipped room-fight scenario, both views, to its end: the alert topic must carry the fight."""
    with run_shipped(broker, tmp_path, "room-fight", "fight", 120) as subscriber:
        alerts = [json.loads(m.payload) for m in subscriber.on("fight/pi/alert")]
        ends = [json.loads(m.payload) for m in subscriber.on("fight/pi/cam0/event") if '"end"' in m.payload]
    assert alerts, "no alert for a fight"
    assert {a["camera"] for a in alerts} >= {"cam0"}
    assert all(a["level"] in ("warning", "alarm") and a["reasons"] for a in alerts)
    assert ends[-1]["alert"] in ("warning", "alarm")


def test_a_fall_raises_a_fall_warning_through_the_broker(broker: Broker, tmp_path: Path) -> None:
    """The shipped home-fall scenario: someone falls and lies still; the classifier's fall, held over two
    keyframes, is a warning (the reference detector has no fall class to make it an alarm)."""
    with run_shipped(broker, tmp_path, "home-fall", "fall", 120) as subscriber:
        alerts = [json.loads(m.payload) for m in subscriber.on("fall/pi/alert")]
        captions = [json.loads(m.payload) for m in subscriber.messages if m.topic.endswith("/caption")]
    assert captions
    assert alerts, "no alert for a fall"
    assert all("fall" in a["kinds"] and a["text"].startswith(("Warning", "Alarm")) for a in alerts), alerts
    assert {"fall:classifier"} <= {reason for a in alerts for reason in a["reasons"]}
    assert not any("violence" in a["kinds"] for a in alerts), "a fall is no fight"


def test_a_close_up_person_with_a_bag_raises_nothing(broker: Broker, tmp_path: Path) -> None:
    """The shipped hall-bag scenario: a shopper with a bag walks up to the camera and stands: no alert."""
    with run_shipped(broker, tmp_path, "hall-bag", "bag", 120) as subscriber:
        alerts = [json.loads(m.payload) for m in subscriber.on("bag/pi/alert")]
        captions = [json.loads(m.payload) for m in subscriber.messages if m.topic.endswith("/caption")]
    print("captions:", [(c["caption"], c["reasons"]) for c in captions], "alerts:", alerts)
    assert len(captions) >= 4
    assert alerts == []
    assert all(c["alert"] == "none" for c in captions)


def test_two_minutes_of_nobody_start_no_event(broker: Broker, tmp_path: Path) -> None:
    """The shipped empty-lighting scenario, both views, to its end: lights flicker, dusk falls, the cameras
    switch to infrared, shadows drift and plants sway, and nobody is there. The detector boxes a
    drifting shadow on camera 1's forecourt for a moment (0.44 and 0.50 on two frames): no event."""
    with run_shipped(broker, tmp_path, "empty-lighting", "empty", 200) as subscriber:
        stats = [json.loads(m.payload) for m in subscriber.on("empty/pi/stats")]
        sensors = [m.payload for camera in ("cam0", "cam1") for m in subscriber.on(f"empty/pi/{camera}/person")]
        events = subscriber.on("empty/pi/cam0/event") + subscriber.on("empty/pi/cam1/event")
    # the scene moves all along, so the detector ran all along (not an idle camera seen every 5 s)
    assert stats
    assert all(s["detections_per_s"] >= 4 for s in stats)
    assert sensors == ["OFF", "OFF"]  # each camera's at the start: nobody seen yet
    assert events == []
    assert list((tmp_path / "data").rglob("*.mp4")) == []


def test_with_both_cameras_dead_the_watchdog_is_still_pinged_and_the_cameras_reported(
    broker: Broker, tmp_path: Path
) -> None:
    """A restart cannot mend a dead camera: the service reports it, retries it, and keeps pinging systemd
    (before, no frames meant no pings, a kill every minute, and the unit `failed` after the start limit)."""
    with socket.socket() as probe:  # a port nobody listens on: an IP camera that is off
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    env = tmp_path / "appliance.env"
    env.write_text(
        f"APPLIANCE_CAMERA_0=file:{tmp_path / 'unplugged.mp4'}\n"
        f"APPLIANCE_CAMERA_1=rtsp://127.0.0.1:{closed}/stream\n"
        f"APPLIANCE_MQTT_HOST=127.0.0.1\nAPPLIANCE_MQTT_PORT={broker.port}\nAPPLIANCE_MQTT_PREFIX=dead\n"
        f"APPLIANCE_DEVICE_ID=pi\nAPPLIANCE_DATA_DIR={tmp_path / 'data'}\nAPPLIANCE_THREADS=1\n"
    )
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    subscriber = Collector(broker, "dead/#")
    process = start_service(env, stderr=None, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="4000000")
    notifications: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                notifications.append((time.monotonic(), notify.recv(512).decode()))
            readied = [t for t, text in notifications if text.startswith("READY=1")]
            if readied and time.monotonic() - readied[0] > 12:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        notify.close()
    try:
        states = {
            camera: [json.loads(m.payload)["state"] for m in subscriber.on(f"dead/pi/{camera}/state")]
            for camera in ("cam0", "cam1")
        }
    finally:
        subscriber.close()
    assert states == {"cam0": ["failed"], "cam1": ["failed"]}
    texts = [text for _, text in notifications]
    ready = next(i for i, text in enumerate(texts) if text.startswith("READY=1"))
    pings = [t for t, text in notifications[ready:] if text == "WATCHDOG=1"]
    assert len(pings) >= 5
    assert max(b - a for a, b in itertools.pairwise([notifications[ready][0], *pings])) < 4.0


def test_a_kill_mid_event_loses_neither_the_clip_nor_the_end_nor_the_sensor(broker: Broker, tmp_path: Path) -> None:
    """SIGKILL (a power cut, the watchdog, the memory limit) in the middle of an event; then a restart on a
    camera that sees nobody. Before: the retained sensor stayed ON, the event never ended, the clip was
    deleted. Now: the clip is made whole under its announced name, the event ends `interrupted`, the
    sensor is OFF."""
    scenario = tmp_path / "visit.json"
    scenario.write_text(json.dumps(VISIT))
    common = (
        f"APPLIANCE_MQTT_HOST=127.0.0.1\nAPPLIANCE_MQTT_PORT={broker.port}\nAPPLIANCE_MQTT_PREFIX=kill\n"
        f"APPLIANCE_DEVICE_ID=pi\nAPPLIANCE_DATA_DIR={tmp_path / 'data'}\nAPPLIANCE_THREADS=1\n"
        "APPLIANCE_PREROLL=1\nAPPLIANCE_KEYFRAME_EVERY=2\n"
    )
    env = tmp_path / "appliance.env"
    env.write_text(f"APPLIANCE_CAMERA_0=sim:{scenario}\n{common}")
    subscriber = Collector(broker, "kill/#")
    first = start_service(env)
    try:
        starts = subscriber.wait_for(lambda m: any(x.topic == "kill/pi/cam0/event" for x in m), timeout=60)
        start = json.loads(next(m.payload for m in starts if m.topic == "kill/pi/cam0/event"))
        assert start["phase"] == "start"
        time.sleep(4.0)  # four keyframes of video, two of them fragments on the disk, the sensor ON
        first.kill()
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    clip = Path(start["clip"])
    assert not clip.exists()
    assert clip.with_name(clip.name + ".part").exists()  # what the killed run was writing
    with Collector(broker, "kill/pi/cam0/person") as late:  # retained: what Home Assistant shows now
        assert [m.payload for m in late.wait_for(lambda m: len(m) >= 1)] == ["ON"]

    env.write_text(f"APPLIANCE_CAMERA_0=file:{tmp_path / 'nobody.mp4'}\n{common}")
    second = start_service(env)
    try:
        ends = subscriber.wait_for(
            lambda m: any(x.topic == "kill/pi/cam0/event" and '"end"' in x.payload for x in m), timeout=60
        )
        with Collector(broker, "kill/pi/cam0/person") as late:
            retained = late.wait_for(lambda m: len(m) >= 1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        subscriber.close()
    end = json.loads(next(m.payload for m in ends if m.topic == "kill/pi/cam0/event" and '"end"' in m.payload))
    assert (end["event_id"], end["reason"], end["clip"]) == (start["event_id"], "interrupted", start["clip"])
    assert end["ended"] is not None
    assert [m.payload for m in retained] == ["OFF"]
    with av.open(str(clip)) as container:
        assert container.metadata.get("comment", "").startswith("interrupted")
        frames = [f.time for f in container.decode(container.streams.video[0])]
    assert frames[-1] - frames[0] >= 1.5  # the pre-roll and the fragments flushed before the kill
    assert not list((tmp_path / "data").rglob("*.part"))


def test_a_camera_that_cannot_exist_stops_the_service_naming_its_key(tmp_path: Path) -> None:
    """A shipped scenario that does not exist is no camera to retry: run ends at once with status 2, as check does,
    so systemd's restart cannot loop on it."""
    env = tmp_path / "appliance.env"
    env.write_text(
        "APPLIANCE_CAMERA_0=sim:shop-knife\nAPPLIANCE_CAMERA_1=sim:no-such-scenario\n"
        f"APPLIANCE_DATA_DIR={tmp_path / 'data'}\nAPPLIANCE_MQTT_HOST=127.0.0.1\nAPPLIANCE_MQTT_PORT=9\n"
    )
    result = run_service(env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("appliance: APPLIANCE_CAMERA_1: ")
    assert "no-such-scenario" in result.stderr
