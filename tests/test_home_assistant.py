"""Home Assistant reads the appliance's discovery config as the appliance means it: checked with Home
Assistant's own MQTT discovery code and schemas, not only our reading of its documentation.

Home Assistant needs a newer Python than the appliance's 3.11, so it runs in an environment of its own
(pyenv's 3.13 here), made once and kept in the test cache; tests/ha_check.py runs inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.events.reports import AlertReport, CaptionReport, Fact, Facts, ModelCaption
from appliance.mqtt.discovery import discovery_messages
from appliance.mqtt.topics import Topics
from tests import cache

pytestmark = pytest.mark.slow  # Home Assistant installed once (3 minutes), then kept in the test cache

ROOT = Path(__file__).resolve().parents[1]
# The newest Home Assistant that runs on Python 3.13.0 and 3.13.1 (later releases ask for 3.13.2 or 3.14);
# device-based discovery came in 2024.12. paho-mqtt is what its MQTT integration asks for.
REQUIREMENTS = ("homeassistant==2025.4.4", "paho-mqtt==2.1.0")
INSTALL_HINT = "set PYTHON313=/path/to/python3.13, or `pyenv install 3.13`"
TOPICS = Topics("appliance", "kitchen")
T0 = 1_795_269_796.345


def python313() -> str:
    """A Python 3.13 to make Home Assistant's environment with."""
    given = os.environ.get("PYTHON313")
    if given:
        return given
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for version in sorted(pyenv.glob("versions/3.13*"), reverse=True):
        if (version / "bin" / "python").exists():
            return str(version / "bin" / "python")
    found = shutil.which("python3.13")
    if found is None:
        pytest.fail(f"Home Assistant's schemas need Python 3.13 and none was found; {INSTALL_HINT}")
    return found


@pytest.fixture(scope="module")
def ha_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of an environment with Home Assistant installed."""
    key = hashlib.sha256(" ".join(REQUIREMENTS).encode()).hexdigest()[:16]
    folder = cache.entry("home-assistant", key) or tmp_path_factory.mktemp("home-assistant") / "venv"
    python = folder / "bin" / "python"
    if not python.exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([python313(), "-m", "venv", str(partial)], check=True)
        pip = [str(partial / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS]
        done = subprocess.run(pip, capture_output=True, text=True, check=False, timeout=1200)
        assert done.returncode == 0, f"installing {' '.join(REQUIREMENTS)} failed: {done.stderr[-3000:]}"
        partial.rename(folder)  # a venv's scripts name its folder: run through `python`, which stays valid
    return python


def ha_check(
    python: Path, messages: list[dict[str, str]], samples: dict[str, list[str]]
) -> subprocess.CompletedProcess[str]:
    """tests/ha_check.py under Home Assistant's Python, on discovery ``messages`` (topic, payload)."""
    return subprocess.run(
        [str(python), str(ROOT / "tests" / "ha_check.py")],
        input=json.dumps({"messages": messages, "samples": samples}),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def ha_reads(python: Path, cameras: list[str], samples: dict[str, list[str]]) -> dict[str, Any]:
    messages = [{"topic": m.topic, "payload": m.payload} for m in discovery_messages(TOPICS, cameras)]
    done = ha_check(python, messages, samples)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def caption(text: str, *, validated: bool) -> str:
    facts = Facts(
        people=Fact(value=2, model="detector", validated=True),
        down=None,
        holding=Fact(value=(), model="detector", validated=True),
        labels=None,
    )
    composed = "2 people on cam0"
    report = CaptionReport(
        event_id="e",
        camera="cam0",
        time=T0,
        caption=text if validated else composed,
        composed=composed,
        model_caption=ModelCaption(text=text, logprob=-0.2, validated=validated),
        facts=facts,
        labels={},
        persons=2,
        alert="none",
        reasons=(),
        latency=0.5,
    )
    return TOPICS.messages_for(report)[0].payload


def alert(level: str, kinds: tuple[str, ...], reasons: tuple[str, ...], text: str) -> str:
    report = AlertReport(
        event_id="e",
        camera="cam0",
        time=T0,
        level=level,  # type: ignore[arg-type]
        reasons=reasons,
        kinds=kinds,
        text=text,
        caption=None,
    )
    return TOPICS.messages_for(report)[0].payload


def test_home_assistant_accepts_the_device_config_and_reads_every_entity(ha_python: Path) -> None:
    alerts = [
        alert("warning", ("fall",), ("fall:detector",), "Warning on cam0: someone is down."),
        alert("alarm", ("violence",), ("word:knife", "object:knife"), '[경보] cam0: "폭력 의심"'),
        alert("warning", ("violence",), ("violence:0.85",), "Warning on cam0: possible violence."),
    ]
    samples = {
        TOPICS.caption("cam0"): [caption("a person is walking " * 20, validated=True), caption("x", validated=False)],
        TOPICS.camera("cam1"): [json.dumps({"state": "failed"})],
        TOPICS.alert(): alerts,
    }
    result = ha_reads(ha_python, ["cam0", "cam1"], samples)
    print("Home Assistant", result["home_assistant"])
    [device] = result["devices"]
    assert device["topic"] == "homeassistant/device/appliance_kitchen/config"
    components = device["components"]
    assert {name: c["platform"] for name, c in components.items()} == {
        "cam0_person": "binary_sensor",
        "cam0_caption": "sensor",
        "cam0_camera": "sensor",
        "cam1_person": "binary_sensor",
        "cam1_caption": "sensor",
        "cam1_camera": "sensor",
        "alert": "binary_sensor",
        "fall_alert": "event",
        "violence_alert": "event",
        "object_alert": "event",
    }
    assert all(c["availability_topic"] == "appliance/kitchen/status" for c in components.values())
    assert len({c["unique_id"] for c in components.values()}) == len(components)
    long, composed = components["cam0_caption"]["rendered"]
    assert len(long) == 255  # Home Assistant keeps no longer a state
    assert composed == "2 people on cam0"
    assert components["cam1_camera"]["rendered"] == ["failed"]
    assert components["alert"]["rendered"] == ["ON", "ON", "ON"]
    # Home Assistant's event entity ignores "{}": an alert of another kind triggers nothing
    fall, violence, objects = (components[f"{kind}_alert"]["rendered"] for kind in ("fall", "violence", "object"))
    assert [json.loads(r) for r in fall] == [
        {"event_type": "warning", "text": "Warning on cam0: someone is down.", "camera": "cam0"},
        {},
        {},
    ]
    assert [json.loads(r).get("event_type") for r in violence] == [None, "alarm", "warning"]
    assert json.loads(violence[1])["text"] == '[경보] cam0: "폭력 의심"'
    assert [json.loads(r).get("event_type") for r in objects] == [None, "alarm", None]


def test_a_config_home_assistant_would_refuse_fails_the_check(ha_python: Path) -> None:
    """The check can fail: a device config without its origin (which device discovery requires)."""
    [message] = discovery_messages(TOPICS, ["cam0"])
    broken = json.loads(message.payload)
    del broken["origin"]
    done = ha_check(ha_python, [{"topic": message.topic, "payload": json.dumps(broken)}], {})
    assert done.returncode != 0
    assert "origin" in done.stderr
