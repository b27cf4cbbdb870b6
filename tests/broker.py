"""A real Mosquitto broker for tests, on 127.0.0.1 and a free port, and a subscriber that collects.

The ``broker`` (one per test module) and ``fresh_broker`` (one per test) fixtures start
``mosquitto`` with a config in a temporary folder, wait until it accepts connections and always
end it by its PID. ``stop()`` and ``start()`` take it away and
bring it back on the same port. It keeps its state on disk (persistence) across a stop and a
start, as a broker in a house would across a reboot, so a ``Collector`` with a kept session
misses nothing while the broker is away.
"""

from __future__ import annotations

import getpass
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from appliance.mqtt.private_broker import accepts, end, free_port
from tests.parts import need

HOST = "127.0.0.1"  # tests never talk to any other address
_collectors = count()


@dataclass
class Broker:
    """One mosquitto process at a time, always on the same port."""

    folder: Path
    options: str = ""  # more config lines, after the listener's (TLS files, a password file)
    allow_anonymous: bool = True
    # a collector may fall behind a publisher draining its backlog: queue, never drop (off: mosquitto's
    # default, as the image ships it; 2.0.11 drops a client whose QoS 1 publish the ACL denies, with it on)
    queue_all: bool = True
    port: int = field(default_factory=free_port)
    host: str = HOST
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.config = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        queue = "max_queued_messages 0\n" if self.queue_all else ""
        self.config.write_text(
            f"listener {self.port} {HOST}\n{self.options}\n"
            f"allow_anonymous {str(self.allow_anonymous).lower()}\n"
            f"persistence true\npersistence_location {self.folder}/\n{queue}"
            # started as root, mosquitto would switch to a user that cannot write the folder
            f"user {getpass.getuser()}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "the broker is running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while not accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto did not start on {HOST}:{self.port}:\n{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """End the broker by its PID (SIGTERM: it saves its state and says goodbye to nobody)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        end(process)

    def restart(self) -> None:
        self.stop()
        self.start()


def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    need("mosquitto")
    running = Broker(tmp_path_factory.mktemp("mosquitto"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker shared by the tests of one module (so a module-scoped fixture may use it too).

    A test that stops it starts it again; what one test leaves retained, the next one sees.
    """
    yield from _running(tmp_path_factory)


@pytest.fixture
def fresh_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker of the test's own: nothing retained from other tests, free to stop and restart."""
    yield from _running(tmp_path_factory)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    retain: bool
    at: float = field(default_factory=time.time, compare=False)  # arrival, for latency measurements
    # the broker's own redelivery of a message it had sent without an acknowledgement (MQTT's DUP flag)
    redelivered: bool = field(default=False, compare=False)

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """A paho subscriber that keeps every message it receives, in arrival order.

    Its session is kept (clean_session off, QoS 1), so messages published while it or the broker
    is away reach it once both are back.
    """

    def __init__(
        self,
        broker: Broker,
        *topics: str,
        user: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
    ) -> None:
        self.topics = topics
        self.messages: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"collector-{os.getpid()}-{next(_collectors)}", clean_session=False
        )
        self._client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  # paho takes float seconds
        if user is not None:
            self._client.username_pw_set(user, password)
        if ca_certs is not None:
            self._client.tls_set(ca_certs=ca_certs)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect_async(broker.host, broker.port, keepalive=5)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the collector could not subscribe"

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags, *_: Any) -> None:
        if not flags.session_present:  # a kept session keeps its subscriptions; again would resend retained
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(
                Received(message.topic, message.payload.decode(), bool(message.retain), redelivered=bool(message.dup))
            )
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """The messages so far, once ``done(messages)`` holds; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out; received {[(m.topic, m.payload) for m in self.messages][-20:]}")
                self._changed.wait(left)
            return list(self.messages)

    def on(self, topic: str) -> list[Received]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def collect(broker: Broker, *topics: str, **login: str) -> Collector:
    """Subscribe to ``topics`` (filters) now, with ``login`` (user, password, ca_certs) if given; use as a
    context manager to unsubscribe."""
    return Collector(broker, *topics, **login)


def in_clock_order(clocks: list[str]) -> bool:
    """Whether HH:MM:SS times never go back, but for the turn of midnight."""
    return all(later >= earlier or earlier >= "23:59" for earlier, later in itertools.pairwise(clocks))
