"""The ``appliance watch`` command: one readable line per caption, alert, event, camera and status message.

    14:03:12 kitchen/cam0 caption  a person is holding a knife  (alarm: word:knife, violence:0.82)

Lines come in the order the messages arrive, each led by its time of arrival (local time), so the
first column only ever goes up. A caption or alert also shows the moment it describes (its
keyframe's time, seconds earlier); any other message whose own time is 2 s or more from its
arrival (a retained state, a backlog after an outage) shows its own time. Lines starting with
``--`` are about the connection.
A payload it cannot read becomes a short line naming the topic; it never ends the watch: anyone
who may publish on the broker can send anything (a time of 1e20 or NaN, control characters that
would drive the terminal), and it is printed escaped, or not at all.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.mqtt.publisher import MqttSettings, make_client

T = TypeVar("T")
KEYFRAME_KINDS = ("caption", "alert")  # their time is the keyframe's
UNSHOWABLE = "--:--:--"
LATE = 2.0  # seconds between a message's own time and its arrival worth showing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The watch options; each overrides its APPLIANCE_MQTT_* setting."""
    parser.add_argument("--host", help="broker host (default: APPLIANCE_MQTT_HOST)")
    parser.add_argument("--port", type=int, help="broker port (default: APPLIANCE_MQTT_PORT)")
    parser.add_argument("--user", help="user name (default: APPLIANCE_MQTT_USER)")
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="read the password from FILE's first line (default: APPLIANCE_MQTT_PASSWORD, from the environment or "
        "--env-file)",
    )
    parser.add_argument(
        "--password",
        help="the password itself: other users of the machine see it in the process list; prefer the above",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="connect with TLS (default: APPLIANCE_MQTT_TLS)",
    )
    parser.add_argument("--ca-file", type=Path, metavar="FILE", help="CA certificate (default: APPLIANCE_MQTT_CA_FILE)")
    parser.add_argument("--prefix", help="topic prefix (default: APPLIANCE_MQTT_PREFIX)")
    parser.add_argument("--device", default="+", help="device id to watch (default: every device)")


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


def _password(args: argparse.Namespace, configured: str) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_file is None:
        return configured
    try:
        lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--password-file {args.password_file}: cannot read it ({error})") from None
    return lines[0] if lines else ""


def _settings(args: argparse.Namespace, config: Config) -> MqttSettings:
    base = MqttSettings.from_config(config, device="")
    return replace(
        base,
        host=_given(args.host, base.host),
        port=_given(args.port, base.port),
        user=_given(args.user, base.user),
        password=_password(args, base.password),
        tls=_given(args.tls, base.tls),
        ca_file=_given(args.ca_file, base.ca_file),
        client_id="",  # the broker names it: a watch must never take over the appliance's session
    )


def run_watch(
    args: argparse.Namespace,
    config: Config,
    out: TextIO,
    stop: threading.Event | None = None,
    max_messages: int | None = None,
) -> int:
    """Print lines until ``stop`` is set or ``max_messages`` lines were printed (or Ctrl-C)."""
    settings = _settings(args, config)
    base = f"{_given(args.prefix, config.mqtt_prefix)}/{args.device}"
    filters = [f"{base}/status", f"{base}/alert", f"{base}/+/caption", f"{base}/+/event", f"{base}/+/state"]
    client = make_client(settings, settings.tls_context(), client_id="", reconnect_on_failure=True)
    client.reconnect_delay_set(1, 10)  # seconds: a person is waiting at the terminal
    done = threading.Event()
    printed = 0
    last_note = ""

    def note(text: str) -> None:  # connection news, each once
        nonlocal last_note
        if text != last_note:
            print(f"-- {text}", file=out, flush=True)
            last_note = text

    def on_connect(client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            note(f"{settings.address} refused the connection ({reason}); retrying")
        else:
            client.subscribe([(topic, 1) for topic in filters])

    def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal printed
        if done.is_set():
            return
        now = time.time()
        try:
            line = describe(message.topic, message.payload, now)
        except Exception:  # whatever a payload holds, the watch goes on
            line = printable(f"{_clock(now)} {message.topic}  (unreadable)")
        print(line, file=out, flush=True)
        printed += 1
        if max_messages is not None and printed >= max_messages:
            done.set()

    def on_disconnect(*_: Any) -> None:
        if not done.is_set():  # not our own disconnect at the end
            note(f"lost {settings.address}; reconnecting")

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: note(f"watching {base}/... on {settings.address}")
    client.on_connect_fail = lambda *_: note(f"cannot reach {settings.address}; retrying")
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.connect_async(settings.host, settings.port, settings.keepalive)
    client.loop_start()
    try:
        while not done.wait(0.1):
            if stop is not None and stop.is_set():
                break
    finally:
        done.set()
        client.disconnect()
        client.loop_stop()
    return 0


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\x1b``), safe for a terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def describe(topic: str, payload: bytes | bytearray, received: float) -> str:
    """One line for a message on a watched topic, escaped; ``received`` stands in for a payload without a
    usable time."""
    return printable(_describe(topic, payload, received))


def _describe(topic: str, payload: bytes | bytearray, received: float) -> str:
    levels = topic.split("/")
    if len(levels) not in (3, 4):
        return f"{_clock(received)} {topic}  (not an appliance topic)"
    device, kind = levels[1], levels[-1]
    source = "/".join(levels[1:-1])
    text = payload.decode("utf-8", "replace")
    if kind == "status":
        return f"{_clock(received)} {source} {kind:8} {text}"
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        body = _BODIES[kind](data)
    except (ValueError, TypeError, KeyError, AttributeError):
        return f"{_clock(received)} {source} {kind:8} (unreadable) {text[:60]!r}"
    if kind == "alert" and isinstance(data.get("camera"), str):
        source = f"{device}/{data['camera']}"
    return f"{_clock(received)} {source} {kind:8} {body}{_moment(kind, data.get('ts'), received)}"


def _moment(kind: str, when: object, received: float) -> str:
    """The moment a message is about, where it is not its arrival: ``  [keyframe 14:03:12]``; nothing for a
    time the clock cannot show (1e20, NaN)."""
    if not isinstance(when, int | float) or isinstance(when, bool):
        return ""
    shown = _clock(when)
    if shown == UNSHOWABLE:
        return ""
    if kind in KEYFRAME_KINDS:
        return f"  [keyframe {shown}]"
    return f"  [at {shown}]" if abs(received - when) >= LATE else ""


def _clock(when: float) -> str:
    """``when`` as local HH:MM:SS."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(when))
    except (OverflowError, OSError, ValueError):
        return UNSHOWABLE


def _why(level: str, reasons: list[str]) -> str:
    return f"{level}: {', '.join(reasons)}" if reasons else level


def _caption(data: dict[str, Any]) -> str:
    alert = data.get("alert", "none")
    why = "" if alert == "none" else f"  ({_why(alert, data.get('reasons', []))})"
    return f"{data['caption']}{why}"


def _alert(data: dict[str, Any]) -> str:
    caption = data.get("caption")
    return _why(data["level"].upper(), data.get("reasons", [])) + (f'  "{caption}"' if caption else "")


def _persons(count: int) -> str:
    return f"{count} person" if count == 1 else f"{count} people"


def _event(data: dict[str, Any]) -> str:
    phase, event_id = data["phase"], data["event_id"]
    alert = "" if data.get("alert", "none") == "none" else f", alert {data['alert']}"
    if phase == "start":
        return f"start  {event_id}: {_persons(data['persons'])}"
    if phase == "end":
        clip = f", clip {data['clip']}" if data.get("clip") else ""
        return f"end    {event_id} after {data['duration']:.0f} s, {_persons(data['max_persons'])} at most{alert}{clip}"
    return f"{phase:6} {event_id}: {_persons(data['persons'])} after {data['duration']:.0f} s{alert}"


def _camera(data: dict[str, Any]) -> str:
    error = data.get("error")
    return f"{data['state']}: {error}" if error else str(data["state"])


_BODIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "caption": _caption,
    "alert": _alert,
    "event": _event,
    "state": _camera,
}
