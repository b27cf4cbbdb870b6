"""Secrets never reach a log line, a topic, `appliance config` or an error: one mask for every URI form."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.masking import mask_secrets
from tests.broker import Broker, Collector
from tests.service_process import start_service

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://admin:s3cret@cam.local:554/h264", "rtsp://admin:***@cam.local:554/h264"),
        ("rtsp://admin:pa/ss@cam.local/h264", "rtsp://admin:***@cam.local/h264"),  # a / in the password
        ("rtsp://admin:p@ss:w0rd@cam.local:554/h264", "rtsp://admin:***@cam.local:554/h264"),
        ("https://0123token@cam.example/feed", "https://***@cam.example/feed"),  # the userinfo is the token
        ("http://cam/video.cgi?user=admin&pwd=hunter2", "http://cam/video.cgi?user=***&pwd=***"),
        ("http://cam/mjpg?resolution=640&PASSWORD=x&fps=5", "http://cam/mjpg?resolution=640&PASSWORD=***&fps=5"),
        ("http://cam/s?token=abc#top;apikey=1", "http://cam/s?token=***#top;apikey=***"),
        (
            "camera 1: http://u:p@a/x?key=k: cannot open; also rtsp://v:q@b/y",
            "camera 1: http://u:***@a/x?key=*** cannot open; also rtsp://v:***@b/y",  # a value runs to a blank
        ),
        ("http://cam.local/video?fps=10", "http://cam.local/video?fps=10"),
        ("file:/home/pi/a@b.mp4", "file:/home/pi/a@b.mp4"),
        ("sim:shop-knife?view=1&loop=1", "sim:shop-knife?view=1&loop=1"),
    ],
)
def test_every_uri_form_is_masked(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_the_service_says_a_failing_cameras_uri_without_its_secrets(broker: Broker, tmp_path: Path) -> None:
    """In the journal (stderr) and in the retained state topic that every user of the broker may read."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    uri = f"http://admin:pa/ss@127.0.0.1:{closed}/video.cgi?user=admin&pwd=hunter2"
    env = tmp_path / "appliance.env"
    env.write_text(
        f"APPLIANCE_CAMERA_0={uri}\nAPPLIANCE_MQTT_HOST=127.0.0.1\nAPPLIANCE_MQTT_PORT={broker.port}\n"
        f"APPLIANCE_MQTT_PREFIX=mask\nAPPLIANCE_DEVICE_ID=pi\nAPPLIANCE_DATA_DIR={tmp_path / 'data'}\n"
        "APPLIANCE_MQTT_PASSWORD=broker-secret\nAPPLIANCE_LOG_LEVEL=debug\n"
    )
    subscriber = Collector(broker, "mask/#")
    process = start_service(env)
    try:
        states = subscriber.wait_for(lambda m: any(x.topic == "mask/pi/cam0/state" for x in m), timeout=30)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        subscriber.close()
    state = json.loads(next(m.payload for m in states if m.topic == "mask/pi/cam0/state"))
    assert state["state"] == "failed"
    assert "admin:***@127.0.0.1" in state["error"]
    assert "admin:***@127.0.0.1" in stderr
    for secret in ("pa/ss", "hunter2", "broker-secret"):
        assert secret not in stderr
        assert all(secret not in m.payload for m in states)


def test_config_masks_the_secrets_unless_asked(tmp_path: Path) -> None:
    env = tmp_path / "appliance.env"
    env.write_text("APPLIANCE_CAMERA_0=rtsp://viewer:s3cret@cam/stream\nAPPLIANCE_MQTT_PASSWORD=broker-secret\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}

    def config(*more: str) -> str:
        command = [sys.executable, "-m", "appliance", "config", "--env-file", str(env), *more]
        return subprocess.run(command, env=environ, capture_output=True, text=True, check=True).stdout

    masked, shown = config(), config("--show-secrets")
    assert "APPLIANCE_CAMERA_0=rtsp://viewer:***@cam/stream\n" in masked
    assert "APPLIANCE_MQTT_PASSWORD=***\n" in masked
    assert "s3cret" not in masked
    assert "broker-secret" not in masked
    assert "APPLIANCE_CAMERA_0=rtsp://viewer:s3cret@cam/stream\n" in shown
    assert "APPLIANCE_MQTT_PASSWORD=broker-secret\n" in shown
