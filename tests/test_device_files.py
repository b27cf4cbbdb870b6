"""What the image puts on the device besides the units: the default env files, appliance-setup, the broker's config.

appliance-setup runs here on a stand-in root (``--root``), as root would run it on the Pi at boot,
and the broker it configures is a real Mosquitto with the shipped directives.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from appliance import envfile
from appliance.config import SETTINGS, Config, parse_config, read_env_file
from tests.broker import Broker, collect
from tests.parts import need

ROOT = Path(__file__).resolve().parents[1]
IMAGE_BUILD = ROOT / "image-build"
SETUP = IMAGE_BUILD / "appliance_setup.py"
SETTING_LINE = re.compile(r"^#(APPLIANCE_[A-Z0-9_]+=.*)$")


def default_env() -> str:
    return subprocess.run(
        [sys.executable, str(IMAGE_BUILD / "appliance_env.py")], capture_output=True, text=True, check=True
    ).stdout


def test_the_default_env_file_loads_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "appliance.env"
    path.write_text(default_env())
    assert parse_config(read_env_file(path)) == Config()


def test_every_setting_is_shown_with_its_default_and_uncommenting_all_changes_nothing(tmp_path: Path) -> None:
    lines = default_env().splitlines()
    shown = [m.group(1) for line in lines if (m := SETTING_LINE.match(line))]
    assert [line.partition("=")[0] for line in shown] == [s.key for s in SETTINGS]
    path = tmp_path / "appliance.env"
    path.write_text("\n".join(SETTING_LINE.sub(r"\1", line) for line in lines) + "\n")
    values = read_env_file(path)
    assert len(values) == len(SETTINGS)
    assert parse_config(values) == Config()


def test_the_default_env_file_suits_systemd_and_windows_editors(tmp_path: Path) -> None:
    text = default_env()
    lines = text.splitlines()
    # A byte-order mark (Notepad) glues onto the first line: systemd then skips it only if it has no '='.
    assert lines[0].startswith("#")
    assert "=" not in lines[0]
    # systemd 252 continues a comment that ends in a backslash onto the next line.
    assert not any(line.endswith("\\") for line in lines)
    assert text.isascii()
    assert all(len(line) <= 100 for line in lines)
    # as Notepad saves it: BOM and CRLF
    path = tmp_path / "appliance.env"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert parse_config(read_env_file(path)) == Config()


@dataclass
class Device:
    root: Path

    @property
    def boot(self) -> Path:
        return self.root / "boot/firmware"

    def device_env(self, text: str) -> None:
        (self.boot / "appliance-device.env").write_text(text)

    def appliance_env(self, text: str) -> None:
        (self.boot / "appliance.env").write_text(text)

    def setup(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SETUP), "--root", str(self.root)], capture_output=True, text=True, check=False
        )

    def users(self) -> dict[str, str]:
        text = (self.root / "etc/mosquitto/appliance.passwd").read_text()
        return dict(line.split(":", 1) for line in text.splitlines())

    def handed(self) -> dict[str, str]:
        """What systemd reads from the file the setup hands to the service (EnvironmentFile=)."""
        entries = envfile.parse((self.root / "run/appliance-setup/mqtt.env").read_text())
        assert all(isinstance(e, envfile.Assignment) for e in entries)
        return {e.key: e.value for e in entries if isinstance(e, envfile.Assignment)}

    def hostname(self) -> str:
        return (self.root / "etc/hostname").read_text().strip()


@pytest.fixture
def device(tmp_path: Path) -> Device:
    need("mosquitto")
    need("root")  # appliance-setup gives the password file to mosquitto's group
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "etc/mosquitto").mkdir(parents=True)
    (root / "etc/hostname").write_text("appliance\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n127.0.1.1\tappliance\n")
    made = Device(root)
    made.appliance_env(default_env())
    shutil.copy(IMAGE_BUILD / "boot/appliance-device.env", made.boot)
    return made


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_as_shipped_only_the_appliance_may_use_the_broker(device: Device) -> None:
    done = device.setup()
    assert done.returncode == 0, done.stderr
    assert "nobody on the network" in done.stderr
    assert device.hostname() == "appliance"
    assert set(device.users()) == {"appliance"}
    assert device.users()["appliance"].startswith("$7$")  # hashed (PBKDF2-SHA512), never the password
    handed = device.handed()
    secret = (device.root / "etc/appliance/mqtt-password").read_text().strip()
    assert handed == {"APPLIANCE_MQTT_USER": "appliance", "APPLIANCE_MQTT_PASSWORD": secret}
    assert len(secret) >= 32
    assert mode(device.root / "etc/appliance/mqtt-password") == 0o600
    assert mode(device.root / "run/appliance-setup/mqtt.env") == 0o600
    assert mode(device.root / "etc/mosquitto/appliance.passwd") == 0o640


def test_the_device_file_names_the_host_and_the_network_login(device: Device) -> None:
    device.device_env("HOSTNAME=door-cam\nMQTT_USER=homeassistant\nMQTT_PASSWORD='s3cret pass'\n")
    done = device.setup()
    assert done.returncode == 0, done.stderr
    assert device.hostname() == "door-cam"
    hosts = (device.root / "etc/hosts").read_text().splitlines()
    assert [line for line in hosts if line.startswith("127.0.1.1")] == ["127.0.1.1\tdoor-cam"]
    assert "::1\t\tlocalhost ip6-localhost" in hosts
    assert set(device.users()) == {"appliance", "homeassistant"}
    first = device.handed()["APPLIANCE_MQTT_PASSWORD"]
    assert device.setup().returncode == 0
    assert device.handed()["APPLIANCE_MQTT_PASSWORD"] == first, "the appliance's own password is made once"


def test_a_notepad_saved_device_file_is_read(device: Device) -> None:
    device.device_env("\ufeffHOSTNAME=door-cam\r\nMQTT_PASSWORD=abc\r\n")
    assert device.setup().returncode == 0
    assert device.hostname() == "door-cam"
    assert set(device.users()) == {"appliance", "mqtt"}


def test_a_byte_order_mark_that_systemd_would_glue_onto_the_first_key_is_removed(device: Device) -> None:
    path = device.boot / "appliance.env"
    path.write_bytes(b"\xef\xbb\xbfAPPLIANCE_CAMERA_1=v4l2:/dev/video0\r\n")
    assert device.setup().returncode == 0
    assert path.read_bytes() == b"APPLIANCE_CAMERA_1=v4l2:/dev/video0\r\n"
    assert device.setup().returncode == 0
    assert path.read_bytes() == b"APPLIANCE_CAMERA_1=v4l2:/dev/video0\r\n"


def test_bad_device_settings_are_named_and_the_rest_still_applies(device: Device) -> None:
    device.device_env("HOSTNAME=not_a_host!\nMQTT_PASSWORD=abc\nPASSWORD=oops\n")
    done = device.setup()
    assert done.returncode == 1
    assert "HOSTNAME='not_a_host!' is not valid" in done.stderr
    assert "appliance-device.env:3: expected one of HOSTNAME, MQTT_USER, MQTT_PASSWORD" in done.stderr
    assert device.hostname() == "appliance"
    assert set(device.users()) == {"appliance", "mqtt"}


def test_an_appliance_publishing_elsewhere_gets_no_local_login(device: Device) -> None:
    device.appliance_env("APPLIANCE_MQTT_HOST=broker.lan\nAPPLIANCE_MQTT_USER=cam\nAPPLIANCE_MQTT_PASSWORD=x\n")
    device.device_env("MQTT_PASSWORD=abc\n")
    assert device.setup().returncode == 0
    assert device.handed() == {}
    assert set(device.users()) == {"mqtt"}


def test_a_login_named_in_appliance_env_is_given_to_the_local_broker(device: Device) -> None:
    device.appliance_env("APPLIANCE_MQTT_USER=cam\nAPPLIANCE_MQTT_PASSWORD=x\n")
    assert device.setup().returncode == 0
    assert device.handed() == {}
    assert set(device.users()) == {"cam"}


def test_a_broken_appliance_env_is_reported_and_the_broker_still_gets_its_file(device: Device) -> None:
    device.appliance_env("this is not a setting\n")
    done = device.setup()
    assert done.returncode == 1
    assert "expected KEY=value" in done.stderr
    assert set(device.users()) == {"appliance"}


def shipped_broker_directives() -> dict[str, str]:
    text = (IMAGE_BUILD / "rootfs/etc/mosquitto/conf.d/appliance.conf").read_text()
    lines = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return dict(lines)


def test_the_broker_listens_on_the_network_and_wants_a_password() -> None:
    assert shipped_broker_directives() == {
        "listener": "1883",
        "allow_anonymous": "false",
        "password_file": "/etc/mosquitto/appliance.passwd",
        "acl_file": "/etc/mosquitto/appliance.acl",
    }


@pytest.fixture
def device_broker(device: Device, tmp_path: Path) -> Iterator[Broker]:
    need("mosquitto")
    device.device_env("MQTT_USER=viewer\nMQTT_PASSWORD=s3cret\n")
    assert device.setup().returncode == 0
    # The shipped directives, but on 127.0.0.1 and a free port (tests talk to no other address).
    running = shipped_broker(device, tmp_path / "broker")
    try:
        yield running
    finally:
        running.stop()


def shipped_broker(device: Device, folder: Path, more: str = "") -> Broker:
    """Mosquitto with the shipped directives and the files appliance-setup wrote, on 127.0.0.1 and a free port."""
    shipped = shipped_broker_directives()
    files = {key: device.root / shipped[key].lstrip("/") for key in ("password_file", "acl_file")}
    folder.mkdir()
    options = "".join(f"{key} {path}\n" for key, path in files.items()) + more
    running = Broker(folder, options=options, allow_anonymous=False, queue_all=False)
    running.start()
    return running


def connect(broker: Broker, user: str | None, password: str | None) -> str:
    """The broker's answer to a connection with these credentials, as paho names it."""
    answered = threading.Event()
    answer: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)

    def on_connect(_client: mqtt.Client, _userdata: object, _flags: object, reason: object, _props: object) -> None:
        answer.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port, keepalive=5)
    client.loop_start()
    try:
        assert answered.wait(10), "the broker did not answer"
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0]


def test_the_broker_lets_in_only_the_configured_logins(device: Device, device_broker: Broker) -> None:
    own = device.handed()
    assert connect(device_broker, "viewer", "s3cret") == "Success"
    assert connect(device_broker, own["APPLIANCE_MQTT_USER"], own["APPLIANCE_MQTT_PASSWORD"]) == "Success"
    assert connect(device_broker, None, None) == "Not authorized"
    assert connect(device_broker, "viewer", "wrong") == "Not authorized"


def test_the_broker_gets_the_password_systemd_hands_the_appliance(device: Device, tmp_path: Path) -> None:
    """appliance.env's `APPLIANCE_MQTT_PASSWORD=pa\\ss` is `pass` to systemd, so to the broker too (the setup
    used to read `pa\\ss`: the appliance was refused)."""
    need("mosquitto")
    device.appliance_env('APPLIANCE_MQTT_USER=cam\nAPPLIANCE_MQTT_PASSWORD=pa\\ss" q"\\$x\n')
    device.device_env('MQTT_USER=viewer\nMQTT_PASSWORD="s3cret \\"quoted\\""\n')
    assert device.setup().returncode == 0
    running = shipped_broker(device, tmp_path / "broker")
    try:
        assert connect(running, "cam", "pass q$x") == "Success"
        assert connect(running, "cam", 'pa\\ss" q"\\$x') == "Not authorized"
        assert connect(running, "viewer", 's3cret "quoted"') == "Success"
    finally:
        running.stop()


def publish(broker: Broker, user: str, password: str, messages: list[tuple[str, str, bool]], **tls: Any) -> None:
    """Publish ``messages`` (topic, payload, retained) in order on one connection."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(user, password)
    if tls:
        client.tls_set(**tls)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(broker.host, broker.port, keepalive=5)
    client.loop_start()
    try:
        assert connected.wait(10), "the broker did not answer"
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_subscribers_read_but_only_the_appliance_writes_its_topics(device: Device, device_broker: Broker) -> None:
    """Before, any logged-in user could publish fake alerts, overwrite the retained status and person
    states, or inject Home Assistant entities."""
    own = device.handed()
    appliance = (own["APPLIANCE_MQTT_USER"], own["APPLIANCE_MQTT_PASSWORD"])
    publish(
        device_broker, *appliance, [("appliance/pi/status", "online", True), ("appliance/pi/cam0/person", "OFF", True)]
    )
    forged = [
        ("appliance/pi/status", "offline", True),
        ("appliance/pi/cam0/person", "ON", True),
        ("appliance/pi/alert", '{"level":"alarm"}', False),
        ("homeassistant/device/fake/config", "{}", True),
        ("homeassistant/status", "online", False),  # Home Assistant's own birth message: allowed
    ]
    with collect(device_broker, "#", user="viewer", password="s3cret") as seen:
        publish(device_broker, "viewer", "s3cret", forged)
        received = seen.wait_for(lambda m: any(x.topic == "homeassistant/status" for x in m))
    assert sorted((m.topic, m.payload) for m in received) == [
        ("appliance/pi/cam0/person", "OFF"),
        ("appliance/pi/status", "online"),
        ("homeassistant/status", "online"),
    ]


def test_a_certificate_in_the_device_file_opens_a_tls_listener(device: Device, tmp_path: Path) -> None:
    from tests.test_mqtt import make_certificates

    certificates = make_certificates(tmp_path)
    shutil.copy(certificates["server.crt"], device.boot / "mqtt.crt")
    shutil.copy(certificates["server.key"], device.boot / "mqtt.key")
    device.device_env(
        "MQTT_USER=viewer\nMQTT_PASSWORD=s3cret\n"
        "MQTT_TLS_CERT_FILE=/boot/firmware/mqtt.crt\nMQTT_TLS_KEY_FILE=/boot/firmware/mqtt.key\n"
    )
    done = device.setup()
    assert done.returncode == 0, done.stderr
    listener = (device.root / "etc/mosquitto/conf.d/appliance-tls.conf").read_text()
    assert "listener 8883\n" in listener
    for name in ("appliance-tls.crt", "appliance-tls.key"):
        assert mode(device.root / "etc/mosquitto/certs" / name) == 0o640
    directives = dict(line.split(None, 1) for line in listener.splitlines() if line and not line.startswith("#"))
    files = {key: device.root / value.lstrip("/") for key, value in directives.items() if key != "listener"}
    # the TLS listener alone, on a free port of 127.0.0.1 (Broker's own listener is the plain one)
    running = shipped_broker(device, tmp_path / "broker", "".join(f"{k} {v}\n" for k, v in files.items()))
    try:
        own = device.handed()
        with collect(
            running, "appliance/#", user="viewer", password="s3cret", ca_certs=str(certificates["ca.crt"])
        ) as seen:
            publish(
                running,
                own["APPLIANCE_MQTT_USER"],
                own["APPLIANCE_MQTT_PASSWORD"],
                [("appliance/pi/status", "online", True)],
                ca_certs=str(certificates["ca.crt"]),
            )
            assert [m.payload for m in seen.wait_for(lambda m: len(m) >= 1)] == ["online"]
    finally:
        running.stop()
    device.device_env("MQTT_USER=viewer\nMQTT_PASSWORD=s3cret\n")  # no certificate: no TLS listener
    assert device.setup().returncode == 0
    assert not (device.root / "etc/mosquitto/conf.d/appliance-tls.conf").exists()
