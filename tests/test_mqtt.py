"""The MQTT stage against a real Mosquitto on 127.0.0.1: payloads, retained state, last will, the
durable outbox through broker outages and process deaths, Home Assistant discovery, ``watch``."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.publish import single

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.events.reports import (
    AlertLevel,
    AlertReport,
    CameraReport,
    CaptionReport,
    EventReport,
    Fact,
    Facts,
    ModelCaption,
    PersonState,
    Report,
)
from appliance.mqtt.discovery import discovery_messages
from appliance.mqtt.outbox import Outbox
from appliance.mqtt.publisher import MqttSettings, Publisher
from appliance.mqtt.topics import Message, Topics, device_id
from appliance.mqtt.watch import add_arguments, describe, run_watch
from tests.broker import HOST, Broker, Received, collect, in_clock_order

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_714_572_192.345  # 2024-05-01T14:03:12.345Z
TOPICS = Topics("t", "dev")
SEQ = "t/dev/seq"

MakePublisher = Callable[..., Publisher]


@pytest.fixture
def broker(fresh_broker: Broker) -> Broker:
    """Every test here has a broker of its own: they stop and restart it, and count retained messages."""
    return fresh_broker


def fast(broker: Broker, **changes: object) -> MqttSettings:
    """Settings that notice and recover from an outage in a fraction of a second."""
    values: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": "appliance-dev",
        "keepalive": 2,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "connect_timeout": 2.0,
    }
    return MqttSettings(**(values | changes))  # type: ignore[arg-type]


@pytest.fixture
def make_publisher(broker: Broker, tmp_path: Path) -> Iterator[MakePublisher]:
    """Started publishers on the test's broker, each with an outbox; all stopped at the end."""
    made: list[tuple[Publisher, Outbox]] = []

    def make(
        outbox: Path | None = None,
        limit: int = 10_000,
        on_connect: Callable[[], list[Message]] | None = None,
        answers: dict[str, Callable[[str], list[Message]]] | None = None,
        **changes: object,
    ) -> Publisher:
        box = Outbox(outbox or tmp_path / f"outbox{len(made)}.sqlite", limit)
        publisher = Publisher(fast(broker, **changes), TOPICS, box, on_connect, answers=answers)
        publisher.start()
        made.append((publisher, box))
        return publisher

    yield make
    for publisher, box in made:
        publisher.stop()
        box.close()


def wait_until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def numbers(messages: list[Received]) -> list[int]:
    return [int(m.payload) for m in messages if m.topic == SEQ]


def first_appearances(messages: list[Received]) -> list[int]:
    return list(dict.fromkeys(numbers(messages)))


# --- payloads ---------------------------------------------------------------------------------


def test_person_state_is_retained_on_and_off() -> None:
    on, off = (TOPICS.messages_for(PersonState("cam0", present, T0)) for present in (True, False))
    assert on == [Message("t/dev/cam0/person", "ON", retain=True, qos=1)]
    assert off == [Message("t/dev/cam0/person", "OFF", retain=True, qos=1)]


def test_event_payloads_for_start_update_and_end() -> None:
    start = EventReport("start", "ev1", "cam0", started=T0, time=T0, persons=1, max_persons=1, clip="/c/ev1.mp4")
    update = EventReport(
        "update", "ev1", "cam0", T0, T0 + 4, persons=2, max_persons=2, alert="warning", labels={"violence": 0.61234}
    )
    end = EventReport(
        "end", "ev1", "cam0", T0, T0 + 12, persons=0, max_persons=2, ended=T0 + 7, clip="/c/ev1.mp4", reason="gone"
    )
    payloads = []
    for report in (start, update, end):
        [message] = TOPICS.messages_for(report)
        assert (message.topic, message.retain, message.qos) == ("t/dev/cam0/event", False, 1)
        assert ": " not in message.payload
        assert ", " not in message.payload
        payloads.append(json.loads(message.payload))
    assert payloads[0] == {
        "v": 1,
        "device": "dev",
        "time": "2024-05-01T14:03:12.345Z",
        "ts": 1714572192.345,
        "camera": "cam0",
        "event_id": "ev1",
        "phase": "start",
        "started": "2024-05-01T14:03:12.345Z",
        "ended": None,
        "duration": 0.0,
        "persons": 1,
        "max_persons": 1,
        "alert": "none",
        "labels": {},
        "clip": "/c/ev1.mp4",
        "reason": None,
        "facts": None,  # no keyframe described yet
    }
    assert payloads[1]["phase"] == "update"
    assert payloads[1]["time"] == "2024-05-01T14:03:16.345Z"
    assert (payloads[1]["duration"], payloads[1]["alert"], payloads[1]["labels"]) == (
        4.0,
        "warning",
        {"violence": 0.612},
    )
    assert (payloads[2]["phase"], payloads[2]["ended"], payloads[2]["duration"], payloads[2]["reason"]) == (
        "end",
        "2024-05-01T14:03:19.345Z",
        7.0,
        "gone",
    )


def caption_report(
    text: str,
    labels: dict[str, float],
    alert: AlertLevel,
    reasons: tuple[str, ...],
    *,
    logprob: float = -0.1,
    time: float = T0,
    camera: str = "cam1",
    latency: float = 0.7531,
    validated: bool = True,
) -> CaptionReport:
    """A caption of one person, by a validated captioner (its sentence is the first line) unless told."""
    facts = Facts(
        people=Fact(value=1, model="detector", validated=True),
        down=None,
        holding=Fact(value=(), model="detector", validated=True),
        labels=Fact(value=labels, model="classifier", validated=validated),
    )
    composed = f"1 person on {camera}"
    return CaptionReport(
        event_id="ev1",
        camera=camera,
        time=time,
        caption=text if validated else composed,
        composed=composed,
        model_caption=ModelCaption(text=text, logprob=logprob, validated=validated),
        facts=facts,
        labels=labels,
        persons=1,
        alert=alert,
        reasons=reasons,
        latency=latency,
    )


def test_caption_alert_camera_stats_and_status_payloads() -> None:
    caption = caption_report(
        "a person is holding a knife", {"normal": 0.18, "violence": 0.82}, "alarm", ("word:knife", "violence:0.82")
    )
    [message] = TOPICS.messages_for(caption)
    data = json.loads(message.payload)
    assert (message.topic, message.retain) == ("t/dev/cam1/caption", False)
    assert data["v"] == 2
    assert data["time"] == "2024-05-01T14:03:12.345Z"
    assert data["camera"] == "cam1"
    assert (data["event_id"], data["caption"], data["composed"]) == (
        "ev1",
        "a person is holding a knife",
        "1 person on cam1",
    )
    assert data["model_caption"] == {"text": "a person is holding a knife", "score": 0.905, "validated": True}
    assert data["labels"] == {"normal": 0.18, "violence": 0.82}
    assert data["facts"] == {
        "people": {"value": 1, "model": "detector", "validated": True},
        "down": None,
        "holding": {"value": [], "model": "detector", "validated": True},
        "labels": {"value": {"normal": 0.18, "violence": 0.82}, "model": "classifier", "validated": True},
    }
    assert data["persons"] == 1
    assert (data["alert"], data["reasons"], data["latency"]) == ("alarm", ["word:knife", "violence:0.82"], 0.753)

    odd = caption_report("?", {"violence": float("inf")}, "none", (), logprob=float("nan"))
    assert json.loads(TOPICS.messages_for(odd)[0].payload, parse_constant=pytest.fail)["labels"] == {"violence": None}

    unvalidated = json.loads(TOPICS.messages_for(caption_report("a knife", {}, "none", (), validated=False))[0].payload)
    assert (unvalidated["caption"], unvalidated["model_caption"]["validated"]) == ("1 person on cam1", False)

    report = AlertReport(
        event_id="ev1",
        camera="cam1",
        time=T0,
        level="alarm",
        reasons=("word:knife",),
        kinds=("violence",),
        text="Alarm on cam1: possible violence. a knife",
        caption="a knife",
    )
    [alert] = TOPICS.messages_for(report)
    assert (alert.topic, alert.retain) == ("t/dev/alert", False)
    assert json.loads(alert.payload) | {"ts": 0} == {
        "v": 2,
        "device": "dev",
        "time": "2024-05-01T14:03:12.345Z",
        "ts": 0,
        "camera": "cam1",
        "event_id": "ev1",
        "level": "alarm",
        "kinds": ["violence"],
        "reasons": ["word:knife"],
        "text": "Alarm on cam1: possible violence. a knife",
        "caption": "a knife",
    }

    [camera] = TOPICS.messages_for(CameraReport("cam0", "failed", T0, "no frames for 5 s"))
    assert (camera.topic, camera.retain) == ("t/dev/cam0/state", True)
    assert json.loads(camera.payload)["state"] == "failed"
    assert json.loads(camera.payload)["error"] == "no frames for 5 s"

    stats = TOPICS.stats_message({"outbox": 3, "fps": {"cam0": 7.5}}, T0)
    assert (stats.topic, stats.retain) == ("t/dev/stats", False)
    assert json.loads(stats.payload)["fps"] == {"cam0": 7.5}
    assert json.loads(stats.payload)["v"] == 1
    assert json.loads(TOPICS.stats_message({}).payload).keys() == {"v", "device", "time", "ts"}

    assert TOPICS.status_message(online=True) == Message("t/dev/status", "online", retain=True)
    assert TOPICS.status_message(online=False) == Message("t/dev/status", "offline", retain=True)


def test_message_refuses_wildcard_topics_and_a_device_id_is_fit_for_topics() -> None:
    for topic in ("", "t/+/x", "t/#"):
        with pytest.raises(ValueError, match="not a topic"):
            Message(topic, "x")
    assert device_id("kitchen") == "kitchen"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", device_id(""))


# --- the outbox -------------------------------------------------------------------------------


def test_outbox_keeps_order_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "data" / "outbox.sqlite"
    box = Outbox(path, 100)
    for i in range(5):
        box.put(Message(SEQ, str(i), retain=i == 2))
    first = box.peek(2)
    assert [m.payload for _, m in first] == ["0", "1"]
    box.remove([key for key, _ in first])
    box.close()

    again = Outbox(path, 100)
    assert again.depth == 3
    waiting = again.peek(10)
    assert [m.payload for _, m in waiting] == ["2", "3", "4"]
    assert waiting[0][1].retain
    assert again.peek(10, after=waiting[0][0]) == waiting[1:]
    again.remove(key for key, _ in waiting)
    again.put(Message(SEQ, "5"))
    # ids keep growing after the outbox empties, so a sender's cursor stays valid
    assert again.peek(1)[0][0] > waiting[-1][0]
    again.close()


def test_outbox_bound_drops_the_oldest_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, 10)
    with caplog.at_level(logging.WARNING, "appliance.mqtt.outbox"):
        for i in range(25):
            box.put(Message(SEQ, str(i)))
    assert (box.depth, box.dropped) == (10, 15)
    assert [m.payload for _, m in box.peek(100)] == [str(i) for i in range(15, 25)]
    assert [r.getMessage() for r in caplog.records] == ["MQTT outbox full (10 messages): dropping the oldest"]
    box.close()
    reopened = Outbox(path, 10)
    assert (reopened.depth, reopened.dropped) == (10, 15)  # the count is kept in the file
    reopened.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_outbox_is_set_aside_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "outbox.sqlite"
    if damage == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
    else:
        box = Outbox(path, 1000)
        for i in range(300):
            box.put(Message(SEQ, f"message {i} " * 20))
        box.close()
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.ERROR, "appliance.mqtt.outbox"):
        box = Outbox(path, 1000)
    assert box.depth == 0
    box.put(Message(SEQ, "fresh"))
    assert [m.payload for _, m in box.peek(5)] == ["fresh"]
    box.close()
    [aside] = [p.name for p in tmp_path.glob("outbox.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert re.fullmatch(r"outbox\.sqlite\.corrupt-\d{8}T\d{6}", aside)
    assert "is corrupt" in caplog.text
    assert "outbox.sqlite.corrupt-" in caplog.text


def test_a_full_disk_is_logged_once_and_the_outbox_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "outbox.sqlite", 1000)
    box.put(Message(SEQ, "kept"))
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk were full
    with caplog.at_level(logging.INFO, "appliance.mqtt.outbox"):
        for _ in range(3):
            box.put(Message(SEQ, "x" * 10_000))
        assert (box.depth, box.dropped) == (1, 3)
        box._db.execute("PRAGMA max_page_count = 1000000")
        box.put(Message(SEQ, "after"))
    assert [m.payload for _, m in box.peek(5)] == ["kept", "after"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "the disk is full; the outbox's reserve was given up" in lines[0]  # no help here: a page limit
    assert "cannot store a message" in lines[1]
    assert lines[2].endswith("works again")
    box.close()
    assert Outbox(tmp_path / "outbox.sqlite", 1000).dropped == 3  # the count reached the file


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int) -> Iterator[Path]:
    """A real file system of ``megabytes`` (tmpfs, mounted by the test; it needs root, as CI runs)."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last block."""
    filler = folder / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def test_on_a_full_disk_the_outbox_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    """Before: on a full disk 3 messages were lost while the broker was up, and 3 delivered ones stayed
    (SQLite needs room to delete them too), to be sent again after a restart."""
    with small_disk(tmp_path / "disk", 24) as disk:
        box = Outbox(disk / "outbox.sqlite", 1000)
        for i in range(20):
            box.put(Message(SEQ, str(i)))
        fill(disk)
        for i in range(20, 220):  # the disk is full from the first of these
            box.put(Message(SEQ, str(i)))
        assert not box.reserve.exists()  # given up to go on
        delivered = box.peek(1000)
        assert [int(m.payload) for _, m in delivered] == list(range(220))
        box.remove([key for key, _ in delivered])
        assert (box.depth, box.dropped) == (0, 0)
        box.close()
        again = Outbox(disk / "outbox.sqlite", 1000)  # a restart: nothing left to send twice
        assert (again.depth, again.dropped, again.peek(10)) == (0, 0, [])
        again.close()


# --- the publisher with a broker --------------------------------------------------------------


def test_retained_person_state_and_online_reach_a_late_subscriber(
    broker: Broker, make_publisher: MakePublisher
) -> None:
    publisher = make_publisher()
    publisher.report(PersonState("cam0", True, T0))
    publisher.report(PersonState("cam1", True, T0))
    publisher.report(PersonState("cam1", False, T0 + 1))
    wait_until(lambda: publisher.sent == 3)
    assert publisher.depth == 0
    assert publisher.connected
    with collect(broker, "t/dev/#") as late:
        seen = late.wait_for(lambda m: len(m) >= 3)
    assert {(m.topic, m.payload, m.retain) for m in seen} == {
        ("t/dev/status", "online", True),
        ("t/dev/cam0/person", "ON", True),
        ("t/dev/cam1/person", "OFF", True),
    }


def test_clean_stop_publishes_offline(broker: Broker, make_publisher: MakePublisher) -> None:
    with collect(broker, "t/dev/status") as status:
        publisher = make_publisher()
        status.wait_for(lambda m: [x.payload for x in m] == ["online"])
        publisher.stop()
        assert not publisher.connected
        status.wait_for(lambda m: [x.payload for x in m] == ["online", "offline"])
    with collect(broker, "t/dev/status") as late:
        assert late.wait_for(lambda m: len(m) == 1)[0] == Received("t/dev/status", "offline", True)


CHILD = """
import sys, time
from pathlib import Path
from appliance.mqtt.outbox import Outbox
from appliance.mqtt.publisher import MqttSettings, Publisher
from appliance.mqtt.topics import Message, Topics

port, outbox, count, then = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
settings = MqttSettings("127.0.0.1", port, client_id="child", keepalive=2, reconnect_min=0.05, reconnect_max=0.2)
publisher = Publisher(settings, Topics("t", "dev"), Outbox(outbox, 1000))
publisher.start()
for i in range(count):
    publisher.send(Message("t/dev/seq", str(i)))
print("sent", flush=True)
if then == "stop":
    publisher.stop()
else:
    time.sleep(60)
"""


def child(port: int, outbox: Path, count: int, then: str) -> subprocess.Popen[str]:
    """A publisher in a process of its own that sends ``count`` messages, then stops or waits to be killed."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", CHILD, str(port), str(outbox), str(count), then]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def test_last_will_says_offline_when_the_process_dies(broker: Broker, tmp_path: Path) -> None:
    with collect(broker, "t/dev/status") as status:
        process = child(broker.port, tmp_path / "outbox.sqlite", 0, "wait")
        try:
            status.wait_for(lambda m: [x.payload for x in m] == ["online"])
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        status.wait_for(lambda m: [x.payload for x in m] == ["online", "offline"])


@pytest.mark.parametrize("end", ["stop", "kill"])
def test_outbox_survives_the_process(broker: Broker, make_publisher: MakePublisher, tmp_path: Path, end: str) -> None:
    """Messages sent while the broker is away outlive the process, cleanly stopped or killed."""
    outbox = tmp_path / "outbox.sqlite"
    broker.stop()
    process = child(broker.port, outbox, 50, end)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "sent\n"
        if end == "kill":
            os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(10)
    broker.start()
    with collect(broker, SEQ) as seen:
        make_publisher(outbox)
        assert numbers(seen.wait_for(lambda m: len(m) >= 50)) == list(range(50))


def test_broker_down_at_start_then_everything_arrives_in_order(
    broker: Broker, make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    count = 1000
    seen = collect(broker, SEQ)  # its session outlives the outage, so it misses nothing
    broker.stop()
    with seen, caplog.at_level(logging.INFO, "appliance.mqtt.publisher"):
        publisher = make_publisher()
        for i in range(count):
            publisher.send(Message(SEQ, str(i)))
        time.sleep(0.5)  # several connection attempts fail meanwhile
        assert publisher.depth == count
        assert not publisher.connected
        began = time.monotonic()
        broker.start()
        received = seen.wait_for(lambda m: len(m) >= count, timeout=30)
        took = time.monotonic() - began  # includes up to 0.2 s of back-off before reconnecting
    assert numbers(received) == list(range(count))
    wait_until(lambda: publisher.depth == 0)
    assert publisher.sent == count
    assert publisher.dropped == 0
    print(f"drained {count} messages in {took:.2f} s ({count / took:.0f}/s)")
    # one line per state change, each naming the broker, however many attempts failed
    lines = [r.getMessage() for r in caplog.records]
    address = f"{HOST}:{broker.port}"
    assert sum("cannot connect (Connection refused)" in line for line in lines) == 1, lines
    assert sum(f"connected to {address}" in line for line in lines) == 1, lines
    assert all(address in line for line in lines)


def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(broker: Broker, make_publisher: MakePublisher) -> None:
    with collect(broker, SEQ) as seen:
        publisher = make_publisher()
        for i in range(100):
            publisher.send(Message(SEQ, str(i)))
        seen.wait_for(lambda m: len(m) >= 50)
        for i in range(100, 150):
            publisher.send(Message(SEQ, str(i)))
        broker.stop()  # while messages are in flight
        for i in range(150, 250):
            publisher.send(Message(SEQ, str(i)))
        wait_until(lambda: not publisher.connected)
        broker.start()
        for i in range(250, 300):
            publisher.send(Message(SEQ, str(i)))
        received = seen.wait_for(lambda m: set(range(300)) <= set(numbers(m)), timeout=30)
    assert first_appearances(received) == list(range(300))
    # Only what the publisher had in flight may come twice from it; the broker, which keeps the
    # collector's session across its restart, also sends again what it had in flight to the
    # collector, marked as a redelivery (DUP).
    earlier: set[str] = set()
    sent_again = 0
    for message in received:
        sent_again += message.payload in earlier and not message.redelivered
        earlier.add(message.payload)
    assert sent_again <= publisher.window
    wait_until(lambda: publisher.depth == 0)


def test_bound_reached_while_the_broker_is_away(broker: Broker, make_publisher: MakePublisher) -> None:
    seen = collect(broker, SEQ)
    broker.stop()
    publisher = make_publisher(limit=10)
    for i in range(30):
        publisher.send(Message(SEQ, str(i)))
    assert (publisher.depth, publisher.dropped) == (10, 20)
    broker.start()
    with seen:
        assert numbers(seen.wait_for(lambda m: len(m) >= 10)) == list(range(20, 30))


def test_home_assistant_online_asks_for_discovery_again(broker: Broker, make_publisher: MakePublisher) -> None:
    """Home Assistant restarted (its broker keeps no retained messages for it, or it lost them) says
    ``online`` on its status topic: the device config goes out again, while ``offline`` asks nothing."""
    discovery = discovery_messages(TOPICS, ["cam0"], "homeassistant")
    publisher = make_publisher(
        on_connect=lambda: discovery,
        answers={"homeassistant/status": lambda said: discovery if said == "online" else []},
    )
    wait_until(lambda: publisher.connected)
    with collect(broker, "homeassistant/device/#") as seen:
        seen.wait_for(lambda m: len(m) == 1)  # the retained one
        for said in ("offline", "online"):
            single("homeassistant/status", said, qos=1, hostname=broker.host, port=broker.port)
        again = seen.wait_for(lambda m: len(m) == 2)
        time.sleep(0.5)  # nothing more comes: "offline" asked for nothing
        assert len(seen.messages) == 2
    assert [m.payload for m in again] == [discovery[0].payload] * 2
    assert (again[0].retain, again[1].retain) == (True, False)  # the broker's copy, then published anew


def test_discovery_then_states_then_the_outbox_on_every_connect(
    broker: Broker, make_publisher: MakePublisher, tmp_path: Path
) -> None:
    discovery = discovery_messages(TOPICS, ["cam0", "cam1"], "homeassistant")
    outbox = Outbox(tmp_path / "waiting.sqlite", 100)
    outbox.put(Message(SEQ, "0"))  # waiting from before this start
    outbox.close()
    greeting = ["t/dev/status"] + [m.topic for m in discovery]
    with collect(broker, "t/#", "homeassistant/#") as seen:
        # a slow reconnect: the collector is back, and has had what the broker kept for it, first
        publisher = make_publisher(
            tmp_path / "waiting.sqlite", on_connect=lambda: discovery, reconnect_min=0.5, reconnect_max=0.5
        )
        order = [m.topic for m in seen.wait_for(lambda m: SEQ in [x.topic for x in m])]
        assert order == [*greeting, SEQ]
        wait_until(lambda: publisher.depth == 0)  # acknowledged: not sent again after the restart
        broker.restart()  # the broker sends the will as it shuts down; a QoS 1 duplicate may come
        publisher.send(Message(SEQ, "1"))
        received = seen.wait_for(lambda m: m[-1].payload == "1")
        online = max(i for i, m in enumerate(received) if (m.topic, m.payload) == ("t/dev/status", "online"))
        assert online >= len(order)
        assert [m.topic for m in received[online:]] == [*greeting, SEQ]

    with collect(broker, "homeassistant/#") as late:
        [device] = late.wait_for(lambda m: len(m) >= 1)
    assert device.retain
    assert device.topic == "homeassistant/device/t_dev/config"
    config = device.json()
    assert config["device"]["identifiers"] == ["t_dev"]
    assert config["origin"]["name"] == "appliance"
    assert config["availability_topic"] == "t/dev/status"
    components = config["components"]
    person = components["cam0_person"]
    assert (person["platform"], person["device_class"], person["state_topic"]) == (
        "binary_sensor",
        "occupancy",
        "t/dev/cam0/person",
    )
    assert (person["payload_on"], person["payload_off"]) == ("ON", "OFF")
    caption = components["cam1_caption"]
    assert caption["state_topic"] == caption["json_attributes_topic"] == "t/dev/cam1/caption"
    assert "value_json.caption" in caption["value_template"]
    alert = components["alert"]
    assert alert["state_topic"] == "t/dev/alert"
    assert alert["device_class"] == "safety"
    assert alert["off_delay"] > 0
    assert components["cam0_camera"]["state_topic"] == "t/dev/cam0/state"
    events = {name: c for name, c in components.items() if c["platform"] == "event"}
    assert set(events) == {"fall_alert", "violence_alert", "object_alert"}
    assert all(e["state_topic"] == "t/dev/alert" and e["event_types"] == ["warning", "alarm"] for e in events.values())
    # the unique ids of the per-entity configs of earlier versions: the entities keep their history
    assert {c["unique_id"] for c in components.values()} == {f"t_dev_{name}" for name in components}
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert config["device"] == {
        "identifiers": ["t_dev"],
        "name": "dev",
        "model": "Raspberry Pi camera appliance",
        "sw_version": config["device"]["sw_version"],
    }
    for component in components.values():
        assert component["state_topic"].startswith("t/dev/")
        assert component["name"]


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (elliptic-curve keys: quick to make)."""
    names = {name: folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "san")}
    names["san"].write_text("subjectAltName=IP:127.0.0.1\n")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *key, "-keyout", names["ca.key"], "-out", names["ca.crt"], "-days", "2", "-subj", "/CN=test"],
        ["req", *key, "-keyout", names["server.key"], "-out", names["server.csr"], "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            names["server.csr"],
            "-CA",
            names["ca.crt"],
            "-CAkey",
            names["ca.key"],
            "-CAcreateserial",
            "-out",
            names["server.crt"],
            "-days",
            "2",
            "-extfile",
            names["san"],
        ],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return names


def test_tls_and_a_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = make_certificates(tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "cam", "secret"], check=True)
    options = f"cafile {files['ca.crt']}\ncertfile {files['server.crt']}\nkeyfile {files['server.key']}\n"
    broker = Broker(tmp_path, options + f"password_file {passwords}", allow_anonymous=False)
    broker.start()
    boxes = [Outbox(tmp_path / f"{name}.sqlite", 100) for name in ("good", "bad")]
    tls = {"tls": True, "ca_file": files["ca.crt"], "user": "cam"}
    good = Publisher(fast(broker, **tls, password="secret"), TOPICS, boxes[0])
    bad = Publisher(fast(broker, **tls, password="wrong", client_id="intruder"), TOPICS, boxes[1])
    try:
        with caplog.at_level(logging.WARNING, "appliance.mqtt.publisher"):
            good.start()
            bad.start()
            good.send(Message(SEQ, "over TLS"))
            bad.send(Message(SEQ, "refused"))
            wait_until(lambda: good.sent == 1)
            time.sleep(0.5)  # the bad one keeps trying meanwhile
        assert not bad.connected
        assert bad.depth == 1
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1
        assert "Not authorized" in refused[0]
    finally:
        for publisher in (good, bad):
            publisher.stop()
        for box in boxes:
            box.close()
        broker.stop()


def test_unusable_tls_files_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA file"):
        MqttSettings(tls=True, ca_file=tmp_path / "missing.crt").tls_context()
    assert MqttSettings(tls=False, ca_file=tmp_path / "missing.crt").tls_context() is None


# --- appliance watch --------------------------------------------------------------------------


def watch_args(broker: Broker, *more: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--host", broker.host, "--port", str(broker.port), "--prefix", "t", *more])


def clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def start_watch(broker: Broker, max_messages: int) -> tuple[io.StringIO, list[int], threading.Thread]:
    """`appliance watch` on a thread until ``max_messages`` came: what it printed, its status, the thread."""
    out = io.StringIO()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_watch(watch_args(broker), Config(), out, max_messages=max_messages)),
        daemon=True,
    )
    thread.start()
    wait_until(lambda: "-- watching t/+/..." in out.getvalue())
    return out, result, thread


def test_watch_prints_a_line_per_message(broker: Broker, make_publisher: MakePublisher) -> None:
    started = time.time()
    out, result, thread = start_watch(broker, max_messages=6)
    publisher = make_publisher()
    reports: list[Report] = [
        EventReport("start", "ev1", "cam0", T0, T0, persons=1, max_persons=1),
        caption_report(
            "a person in a red shirt is holding a knife",
            {"violence": 0.82},
            "alarm",
            ("word:knife", "violence:0.82"),
            time=T0 + 1,
            camera="cam0",
        ),
        AlertReport(
            event_id="ev1",
            camera="cam0",
            time=T0 + 1,
            level="alarm",
            reasons=("word:knife", "violence:0.82"),
            kinds=("violence",),
            text="Alarm on cam0: possible violence. a person holding a knife",
            caption="a person holding a knife",
        ),
        CameraReport("cam1", "failed", T0 + 2, "no frames for 5 s"),
        EventReport("end", "ev1", "cam0", T0, T0 + 20, 0, 2, ended=T0 + 15, clip="/clips/ev1.mp4"),
    ]
    for report in reports:
        publisher.report(report)
    thread.join(10)
    assert result == [0]
    lines = out.getvalue().splitlines()
    assert lines[0] == f"-- watching t/+/... on {HOST}:{broker.port}"
    arrivals = [line[:8] for line in lines[1:]]
    assert in_clock_order(arrivals), "each line leads with its arrival: the column only goes up"
    assert arrivals[0] >= clock(started)
    assert [line[9:] for line in lines[1:]] == [
        "dev status   online",
        f"dev/cam0 event    start  ev1: 1 person  [at {clock(T0)}]",
        "dev/cam0 caption  a person in a red shirt is holding a knife"
        f"  (alarm: word:knife, violence:0.82)  [keyframe {clock(T0 + 1)}]",
        f'dev/cam0 alert    ALARM: word:knife, violence:0.82  "a person holding a knife"  [keyframe {clock(T0 + 1)}]',
        f"dev/cam1 state    failed: no frames for 5 s  [at {clock(T0 + 2)}]",
        f"dev/cam0 event    end    ev1 after 15 s, 2 people at most, clip /clips/ev1.mp4  [at {clock(T0 + 20)}]",
    ]


def test_watch_shows_a_live_message_at_its_arrival_and_a_caption_with_its_keyframe() -> None:
    now = time.time()
    event = json.dumps({"ts": now - 1, "phase": "update", "event_id": "ev1", "persons": 1, "duration": 8})
    assert (
        describe("t/dev/cam0/event", event.encode(), now)
        == f"{clock(now)} dev/cam0 event    update ev1: 1 person after 8 s"
    )
    caption = json.dumps({"ts": now - 1, "caption": "a person is walking", "alert": "none"})
    assert describe("t/dev/cam0/caption", caption.encode(), now) == (
        f"{clock(now)} dev/cam0 caption  a person is walking  [keyframe {clock(now - 1)}]"
    )


def test_watch_reports_an_absent_broker_once_and_ends_on_stop(broker: Broker) -> None:
    broker.stop()
    out = io.StringIO()
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    assert run_watch(watch_args(broker, "--device", "dev"), Config(), out, stop=stop) == 0
    assert out.getvalue() == f"-- cannot reach {HOST}:{broker.port}; retrying\n"


def test_watch_survives_unreadable_payloads() -> None:
    now = T0
    for payload in (b"{not json", b"[1, 2]", b'{"v": 1}', b"\xff\xfe", b'{"caption": 3, "alert": 5}'):
        line = describe("t/dev/cam0/caption", payload, now)
        assert line.startswith(f"{clock(now)} dev/cam0 caption ")
        assert len(line) < 120
    assert "(unreadable)" in describe("t/dev/cam0/caption", b"{not json", now)
    assert "(unreadable)" in describe("t/dev/cam0/event", b'{"phase": "start"}', now)
    assert describe("t/x", b"1", now) == f"{clock(now)} t/x  (not an appliance topic)"
    assert describe("t/dev/status", b"offline", now) == f"{clock(now)} dev status   offline"


def test_watch_shows_absurd_times_as_received_and_escapes_control_characters() -> None:
    now = T0
    for ts in ("1e20", "-1e300", "NaN", "Infinity", '"soon"', "true"):
        line = describe("t/dev/cam0/state", f'{{"ts": {ts}, "state": "ok"}}'.encode(), now)
        assert line == f"{clock(now)} dev/cam0 state    ok", ts
    payload = json.dumps({"ts": T0, "caption": "a person\x1b[2J\x1b]0;owned\x07 in red\nnext", "alert": "none"})
    line = describe("t/dev/cam0/caption", payload.encode(), now)
    assert line == (
        f"{clock(now)} dev/cam0 caption  a person\\x1b[2J\\x1b]0;owned\\x07 in red\\nnext  [keyframe {clock(T0)}]"
    )
    assert line.isprintable()
    assert describe("t/dev\x1b[31m/cam0/state", b"{}", now).isprintable()


def test_watch_goes_on_after_any_payload(broker: Broker) -> None:
    """Anyone who may publish on the broker can send anything; the line after it still comes."""
    out, result, thread = start_watch(broker, max_messages=7)
    hostile = [
        b'{"ts": 1e20, "state": "ok"}',
        b'{"ts": NaN, "phase": "start", "event_id": "x", "persons": NaN}',
        b'{"ts": 1, "caption": {"nested": [1, 2]}, "alert": ["x"]}',
        b"\xff\xfe\x00\x1b[2J",
        b'{"ts": 1, "level": 7, "reasons": "x"}',
        b"[" * 100_000,  # deeper than the JSON reader will go
    ]
    topics = ["state", "event", "caption", "caption", "alert", "event"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in zip(topics, hostile, strict=True):
            name = "t/dev/alert" if topic == "alert" else f"t/dev/cam0/{topic}"
            client.publish(name, payload, qos=1).wait_for_publish(5)
        client.publish("t/dev/cam0/state", json.dumps({"ts": T0, "state": "ok"}), qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    thread.join(10)
    assert result == [0]
    lines = out.getvalue().splitlines()
    assert len(lines) == 8  # the connection line, six hostile payloads, and the plain one after them
    assert lines[-1].endswith(f" dev/cam0 state    ok  [at {clock(T0)}]")
    assert all(line.isprintable() for line in lines)


def test_with_the_default_back_off_the_publisher_is_back_within_5_s_of_the_broker(
    broker: Broker, tmp_path: Path
) -> None:
    """A broker away long enough for the back-off to reach its cap (here 15 s), then back."""
    box = Outbox(tmp_path / "outbox.sqlite", 100)
    defaults = MqttSettings()
    publisher = Publisher(
        MqttSettings(broker.host, broker.port, client_id="appliance-dev", keepalive=2), TOPICS, box, None
    )
    publisher.start()
    try:
        wait_until(lambda: publisher.connected)
        broker.stop()
        wait_until(lambda: not publisher.connected)
        time.sleep(15.0)
        broker.start()
        began = time.monotonic()
        wait_until(lambda: publisher.connected, timeout=30)
        took = time.monotonic() - began
    finally:
        publisher.stop()
        box.close()
    print(f"back {took:.2f} s after the broker (back-off {defaults.reconnect_min} to {defaults.reconnect_max} s)")
    assert took < 5.0


def test_watch_reads_its_password_from_a_file_not_the_command_line(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "guard", "s3cret/with:odd@chars"], check=True)
    broker = Broker(tmp_path, f"password_file {passwords}", allow_anonymous=False)
    broker.start()

    def first_line(secret: str) -> str:
        (tmp_path / "password").write_text(secret)
        out, stop = io.StringIO(), threading.Event()
        args = watch_args(broker, "--user", "guard", "--password-file", str(tmp_path / "password"))
        thread = threading.Thread(target=run_watch, args=(args, Config(), out, stop), daemon=True)
        thread.start()
        wait_until(lambda: "-- " in out.getvalue())
        stop.set()
        thread.join(10)
        assert "s3cret" not in out.getvalue()
        return out.getvalue().splitlines()[0]

    try:
        assert first_line("s3cret/with:odd@chars\n").startswith("-- watching")
        assert "refused the connection (Not authorized)" in first_line("wrong\n")
    finally:
        broker.stop()


def test_the_readmes_example_payloads_have_the_fields_the_appliance_sends() -> None:
    """The topic table's examples (event, caption, alert) carry exactly the fields and versions of the real payloads."""
    rows = {
        line.split("|")[1].strip(): line.split("`{", 1)[1].rsplit("}`", 1)[0].join("{}")
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `appliance/kitchen/") and "`{" in line
    }
    facts = Facts(
        people=Fact(value=1, model="detector", validated=True),
        down=None,
        holding=Fact(value=(), model="detector", validated=True),
        labels=None,
    )
    made: dict[str, Report] = {
        "`appliance/kitchen/cam0/event` (update)": EventReport("update", "e", "cam0", T0, T0, 1, 1, facts=facts),
        "`appliance/kitchen/cam0/event` (end)": EventReport("end", "e", "cam0", T0, T0, 0, 1, ended=T0, reason="gone"),
        "`appliance/kitchen/cam0/caption` (a real camera)": caption_report("a", {}, "none", (), validated=False),
        "`appliance/kitchen/alert`": AlertReport(
            event_id="e", camera="cam0", time=T0, level="warning", reasons=(), kinds=(), text="", caption=None
        ),
    }
    for name, report in made.items():
        sent = json.loads(TOPICS.messages_for(report)[0].payload)
        shown = json.loads(rows[name])
        assert set(shown) == set(sent), name
        assert shown["v"] == sent["v"], name
        if isinstance(sent.get("facts"), dict):
            assert set(shown["facts"]) == set(sent["facts"]), name
