"""Run under Home Assistant's own Python: read discovery messages and sample payloads (JSON on stdin),
check them with Home Assistant's MQTT discovery code and schemas, render every value template on the
samples of its state topic, and print what came out (JSON on stdout).

Home Assistant is not a dependency of the appliance: it needs a newer Python, so the test runs this
file in an environment of its own (see tests/test_home_assistant.py).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
from typing import Any

from homeassistant.components.mqtt.discovery import (
    MQTTDiscoveryPayload,
    _merge_common_device_options,
    _replace_all_abbreviations,
)
from homeassistant.components.mqtt.schemas import DEVICE_DISCOVERY_SCHEMA
from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant
from homeassistant.helpers import frame
from homeassistant.helpers.template import TemplateEnvironment


def check(hass: HomeAssistant, topic: str, payload: str, samples: dict[str, list[str]]) -> dict[str, Any]:
    """What Home Assistant makes of one device discovery message."""
    device = MQTTDiscoveryPayload(json.loads(payload))
    _replace_all_abbreviations(device)
    DEVICE_DISCOVERY_SCHEMA(device)  # raises on a payload Home Assistant would refuse
    env = TemplateEnvironment(hass, False, False, None)
    components: dict[str, Any] = {}
    for component_id, raw in device["components"].items():
        config = dict(raw)
        platform = config.pop("platform")
        component = MQTTDiscoveryPayload(config)
        component["device"], component["origin"] = device["device"], device["origin"]
        _merge_common_device_options(component, device)
        module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
        validated = module.DISCOVERY_SCHEMA(dict(component))
        rendered = []
        template = config.get("value_template")
        for sample in samples.get(validated["state_topic"], []) if template else []:
            rendered.append(env.from_string(template).render(value_json=json.loads(sample), value=sample))
        components[component_id] = {
            "platform": platform,
            "unique_id": validated.get("unique_id"),
            "availability_topic": component.get("availability_topic"),
            "state_topic": validated["state_topic"],
            "rendered": rendered,
        }
    return {"topic": topic, "components": components}


async def checked(request: dict[str, Any]) -> list[dict[str, Any]]:
    # a Home Assistant instance, not started: its validators and templates look for the current one
    with tempfile.TemporaryDirectory() as config:
        hass = HomeAssistant(config)
        frame.async_setup(hass)
        return [check(hass, m["topic"], m["payload"], request["samples"]) for m in request["messages"]]


def main() -> int:
    results = asyncio.run(checked(json.load(sys.stdin)))
    json.dump({"home_assistant": ha_version, "devices": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
