"""The MQTT publisher: one thread that owns the paho client and drains the outbox in order.

``send`` only writes the message to the outbox (durable first) and returns; the publisher thread
connects, announces ``online`` (retained; the last will says ``offline``), publishes the
``on_connect`` messages (discovery, current states), subscribes to the ``answers`` topics (Home
Assistant's status: its ``online`` asks for discovery again), then sends outbox messages in order with QoS
1, up to ``window`` unacknowledged at a time. A message leaves the outbox only when its PUBACK
arrives. When the connection drops, what was unacknowledged is sent again from the outbox after
reconnecting: at least once, in order of first appearance.

Each connection gets a fresh paho client, used from this thread only: paho never re-sends
messages of its own from an old session, so the outbox is the one source of (re)transmission.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.events.reports import Report
from appliance.mqtt.outbox import Outbox
from appliance.mqtt.topics import OFFLINE, Message, Topics

logger = logging.getLogger(__name__)

TICK = 0.1  # longest wait in the network loop: how late a message sent while idle may leave
GOODBYE_WAIT = 2.0  # how long stop() waits for the broker to acknowledge "offline"


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker."""

    host: str = "localhost"
    port: int = 1883
    user: str = ""
    password: str = ""
    tls: bool = False
    ca_file: Path | None = None  # None: the system's CA certificates
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str = ""  # empty: the broker assigns one (no session kept)
    keepalive: int = 60
    # Back-off between connection attempts, doubling up to the max, less up to a quarter at random (so
    # that appliances that lost one broker do not all knock at once): back within 4 s of the broker,
    # at the cost of a refused connection every 3 to 4 s while it is away.
    reconnect_min: float = 0.5
    reconnect_max: float = 4.0
    connect_timeout: float = 5.0

    @classmethod
    def from_config(cls, config: Config, device: str) -> MqttSettings:
        return cls(
            host=config.mqtt_host,
            port=config.mqtt_port,
            user=config.mqtt_user,
            password=config.mqtt_password,
            tls=config.mqtt_tls,
            ca_file=config.mqtt_ca_file,
            cert_file=config.mqtt_cert_file,
            key_file=config.mqtt_key_file,
            client_id=config.mqtt_client_id or f"appliance-{device}",
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context, or None without TLS; unreadable files raise ConfigError."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except OSError as error:
            raise ConfigError(f"APPLIANCE_MQTT_CA_FILE: cannot use the MQTT CA file {self.ca_file}: {error}") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except OSError as error:
                files = f"{self.cert_file}" + (f" and key {self.key_file}" if self.key_file else "")
                raise ConfigError(
                    f"APPLIANCE_MQTT_CERT_FILE / APPLIANCE_MQTT_KEY_FILE: cannot use the MQTT client certificate "
                    f"{files}: {error}"
                ) from None
        return context


def make_client(
    settings: MqttSettings, tls: ssl.SSLContext | None, client_id: str, reconnect_on_failure: bool
) -> mqtt.Client:
    """A paho client (callback API version 2) with the credentials and TLS of ``settings``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, reconnect_on_failure=reconnect_on_failure)
    client.connect_timeout = settings.connect_timeout
    if settings.user:
        client.username_pw_set(settings.user, settings.password or None)
    if tls is not None:
        client.tls_set_context(tls)
    return client


class Publisher:
    """Sends messages to the broker through the durable outbox; ``start`` it, ``stop`` it."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        outbox: Outbox,
        on_connect: Callable[[], Iterable[Message]] | None = None,
        window: int = 20,
        answers: Mapping[str, Callable[[str], Iterable[Message]]] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.window = window
        self._outbox = outbox
        self._on_connect = on_connect
        self._answers = dict(answers or {})  # topic -> the messages to publish for a payload received on it
        self._tls = settings.tls_context()  # bad TLS files stop start-up, not every reconnect
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by send(): the outbox has something new
        self._thread: threading.Thread | None = None
        self._connected = False
        self._sent = 0
        self._state: str | None = None  # the connection state last logged

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def depth(self) -> int:
        """Messages waiting in the outbox (including those sent but not yet acknowledged)."""
        return self._outbox.depth

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    @property
    def sent(self) -> int:
        """Outbox messages the broker acknowledged since start."""
        return self._sent

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def send(self, message: Message) -> None:
        """Queue ``message`` on disk for the publisher thread; never waits for the network."""
        self._outbox.put(message)
        self._wake.set()

    def report(self, report: Report) -> None:
        for message in self.topics.messages_for(report):
            self.send(message)

    @property
    def alive(self) -> bool:
        """Whether the publisher's thread runs (it ends only with ``stop``: anything else is a fault)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Say ``offline`` (retained), disconnect cleanly and end the thread; the outbox keeps the rest."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.settings.connect_timeout + GOODBYE_WAIT + 1.0)
            if self._thread.is_alive():
                logger.warning("MQTT publisher thread did not end in time")
            self._thread = None

    def _run(self) -> None:
        delay = self.settings.reconnect_min
        while not self._stopping.is_set():
            try:
                established = _Connection(self).serve()
            except Exception:  # a bug must cost a reconnect, not the publisher
                logger.exception("MQTT publisher failed; reconnecting")
                established = False
            self._connected = False
            delay = self.settings.reconnect_min if established else min(delay * 2, self.settings.reconnect_max)
            self._stopping.wait(delay * random.uniform(0.75, 1.0))

    def _greeting(self) -> list[Message]:
        """What to publish on each connect before the outbox: ``online``, then the on_connect messages."""
        messages = [self.topics.status_message(online=True)]
        if self._on_connect is not None:
            try:
                messages += self._on_connect()
            except Exception:
                logger.exception("MQTT on-connect messages failed; sending the outbox without them")
        return messages

    def _log_state(self, state: str, level: int, text: str, *args: object) -> None:
        """Log a connection state once, not once per retry."""
        if state != self._state:
            logger.log(level, text, *args)
            self._state = state

    def _up(self) -> None:
        self._connected = True
        self._log_state(
            "up", logging.INFO, "MQTT connected to %s (%d in the outbox)", self.settings.address, self.depth
        )

    def _down(self, why: str) -> None:
        self._connected = False
        self._log_state(
            why,
            logging.WARNING,
            "MQTT broker %s: %s; retrying with back-off, messages wait in the outbox (%d now)",
            self.settings.address,
            why,
            self.depth,
        )


class _Connection:
    """One connection's life: a fresh client, its in-flight window, its cursor in the outbox."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._outbox = publisher._outbox
        settings = publisher.settings
        self._client = make_client(settings, publisher._tls, settings.client_id, reconnect_on_failure=False)
        self._client.will_set(publisher.topics.status(), OFFLINE, qos=1, retain=True)
        # no limit in paho (0): the window bounds the outbox messages, and the greeting is short
        self._client.max_inflight_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self.established = False
        self._refused: str | None = None
        self._inflight: dict[int, int] = {}  # paho message id -> outbox id
        self._acked: list[int] = []  # outbox ids acknowledged, not yet removed
        self._cursor = 0  # the newest outbox id sent on this connection
        self._more = True  # the outbox may hold unsent messages beyond the cursor

    def serve(self) -> bool:
        """Connect and publish until the connection ends or the publisher stops; True once connected."""
        publisher, settings = self._publisher, self._publisher.settings
        try:
            self._client.connect(settings.host, settings.port, settings.keepalive)
        except OSError as error:  # refused, unreachable, unknown host, TLS handshake
            publisher._down(f"cannot connect ({error.strerror or error})")
            return False
        deadline = monotonic() + settings.connect_timeout
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while not publisher._stopping.is_set():
            rc = self._client.loop(TICK)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self.established:
                self._pump()
            elif monotonic() > deadline:
                break
        if publisher._stopping.is_set():
            if self.established:
                self._goodbye()
            else:
                self._client.disconnect()
            return self.established
        if self._refused is not None:
            publisher._down(f"refused the connection ({self._refused})")
        elif not self.established:
            publisher._down("no answer to CONNECT")
        else:
            publisher._down(f"connection lost ({mqtt.error_string(rc)})")
        self._client.disconnect()  # closes the socket if it is still open
        return self.established

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        self.established = True
        for message in self._publisher._greeting():
            client.publish(message.topic, message.payload, message.qos, message.retain)
        for topic in self._publisher._answers:
            client.subscribe(topic, qos=1)
        self._publisher._up()

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        answer = self._publisher._answers.get(message.topic)
        if answer is None:
            return
        try:
            replies = list(answer(message.payload.decode("utf-8", "replace")))
        except Exception:  # an answer that fails must not cost the connection
            logger.exception("MQTT answer to %s failed", message.topic)
            return
        for reply in replies:
            client.publish(reply.topic, reply.payload, reply.qos, reply.retain)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: ReasonCode, _props: Any) -> None:
        key = self._inflight.pop(mid, None)
        if key is not None:  # None: a greeting message, or QoS 0
            self._acked.append(key)

    def _remove_acked(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self._outbox.remove(acked)
            self._publisher._sent += len(acked)

    def _pump(self) -> None:
        """Forget what was acknowledged and fill the window from the outbox, in order."""
        self._remove_acked()
        room = self._publisher.window - len(self._inflight)
        wake = self._publisher._wake
        if room <= 0 or not (self._more or wake.is_set()):
            return
        wake.clear()  # before peeking: a send() after this is seen on the next tick
        batch = self._outbox.peek(room, after=self._cursor)
        self._more = len(batch) == room
        for key, message in batch:
            info = self._client.publish(message.topic, message.payload, message.qos, message.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # the connection broke; the loop notices and the next one re-sends
            self._cursor = key
            if message.qos == 0:
                self._acked.append(key)  # no acknowledgement will come
            else:
                self._inflight[info.mid] = key

    def _goodbye(self) -> None:
        """Publish ``offline`` (a clean disconnect suppresses the will), wait briefly, disconnect."""
        status = self._publisher.topics.status_message(online=False)
        info = self._client.publish(status.topic, status.payload, status.qos, status.retain)
        deadline = monotonic() + GOODBYE_WAIT
        while info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not info.is_published() and monotonic() < deadline:
            if self._client.loop(TICK) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self._remove_acked()  # acknowledgements that came in while waiting
        self._client.disconnect()
        logger.info(
            "MQTT disconnected from %s (%d left in the outbox)", self._publisher.settings.address, self._outbox.depth
        )
