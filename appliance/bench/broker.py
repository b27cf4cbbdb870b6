"""The broker the benchmark times MQTT messages through, and the subscriber that stamps their arrival.

The configured broker (``APPLIANCE_MQTT_*``) when it answers; else a private ``mosquitto`` on
127.0.0.1 and a free port, when the binary is installed, stopped by its PID afterwards; else none,
and the MQTT figures are reported as not measured. Nothing is sent anywhere else.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from appliance.config import Config
from appliance.mqtt.private_broker import LOCAL, installed, private_mosquitto
from appliance.mqtt.publisher import MqttSettings, make_client

log = logging.getLogger(__name__)

CONNECT_WAIT = 5.0  # seconds a broker has to accept the subscriber
RETAINED = ("status", "person", "state")  # last topic levels the appliance publishes retained


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    at: float  # time.time() on arrival


class Subscriber:
    """Collects every message under ``root`` with its arrival time; ``connected`` says whether it got in."""

    def __init__(self, settings: MqttSettings, root: str) -> None:
        self.settings, self.root = settings, root
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = make_client(settings, settings.tls_context(), client_id="", reconnect_on_failure=False)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message

    def connect(self) -> bool:
        try:
            self._client.connect(self.settings.host, self.settings.port, keepalive=30)
        except (OSError, ValueError) as error:
            log.info("bench: no broker at %s: %s", self.settings.address, error)
            return False
        self._client.loop_start()
        if self._subscribed.wait(CONNECT_WAIT):
            return True
        self.close()
        return False

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(f"{self.root}/#", qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = Received(message.topic, message.payload.decode(errors="replace"), time.time())
        with self._lock:
            self.messages.append(received)

    def on(self, suffix: str) -> list[Received]:
        """Messages on ``root/suffix``, in arrival order."""
        with self._lock:
            return [m for m in self.messages if m.topic == f"{self.root}/{suffix}"]

    def clear_retained(self) -> None:
        """Remove what the benchmark's device left retained on the broker (empty retained payloads)."""
        with self._lock:
            topics = {m.topic for m in self.messages if m.topic.rsplit("/", 1)[-1] in RETAINED}
        for topic in sorted(topics):
            self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(CONNECT_WAIT)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass(frozen=True)
class Broker:
    settings: MqttSettings | None  # None: no broker, see ``why``
    whose: str  # configured or private
    why: str = ""

    def describe(self) -> str:
        if self.settings is None:
            return f"none: {self.why}"
        return f"{self.whose} broker at {self.settings.address}"


def _answers(settings: MqttSettings) -> bool:
    subscriber = Subscriber(settings, "appliance-bench-probe")
    if not subscriber.connect():
        return False
    subscriber.close()
    return True


@contextlib.contextmanager
def open_broker(config: Config, folder: Path) -> Iterator[Broker]:
    """The broker to measure through, for the length of the ``with`` block."""
    configured = replace(MqttSettings.from_config(config, "bench"), client_id="")
    if _answers(configured):
        yield Broker(configured, "configured")
        return
    if not installed():
        why = f"no broker answers at {configured.address} and mosquitto is not installed"
        yield Broker(None, "", why)
        return
    with private_mosquitto(folder) as port:
        if port is None:
            yield Broker(None, "", f"no broker answers at {configured.address}; a private mosquitto did not start")
            return
        yield Broker(MqttSettings(host=LOCAL, port=port), "private")
