"""Home Assistant MQTT discovery: one retained device config whose components are the appliance's entities.

Topic: ``<ha_prefix>/device/<prefix>_<device>/config`` (device-based discovery, Home Assistant
2024.12 and later), re-published whenever Home Assistant says ``online`` on ``<ha_prefix>/status``
(it forgets what it was told when it restarts without a retaining broker). Per camera: a person
binary sensor (occupancy, from the retained ON/OFF topic), the last caption (a sensor whose
attributes are the whole caption payload) and the camera's health (a diagnostic enum sensor). Per
device: an alert binary sensor (safety) that turns on with a warning or alarm and off again
``alert_hold`` seconds later, and one ``event`` entity per kind of alert (fall, violence, object
held), with event types ``warning`` and ``alarm``, for automations to trigger on. Every entity is
unavailable while the status topic says ``offline``. Unique ids are those of the per-entity configs
of earlier versions (``<ha_prefix>/<component>/<node>/<object>/config``), so entities keep their
history; those retained configs are not cleared here, as an empty config on an old topic would
remove the device's entity of the same id at every reconnect (the README says how to clear them once).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from appliance import __version__
from appliance.mqtt.topics import OFFLINE, ONLINE, PERSON_OFF, PERSON_ON, Message, Topics

ALERT_HOLD = 300  # seconds the alert sensor stays on after the latest alert
MODEL = "Raspberry Pi camera appliance"
ORIGIN = {"name": "appliance", "sw_version": __version__}
# event entity -> the Jinja test on the alert payload that makes an alert one of its events
ALERT_EVENTS = {
    "fall_alert": "'fall' in value_json.kinds",
    "violence_alert": "'violence' in value_json.kinds",
    "object_alert": "'object:' in value_json.reasons | join(' ')",
}


def ha_status_topic(ha_prefix: str) -> str:
    """Where Home Assistant says ``online`` when it (re)starts."""
    return f"{ha_prefix}/status"


def _components(topics: Topics, cameras: Sequence[str], node: str, alert_hold: int) -> dict[str, dict[str, Any]]:
    components: dict[str, dict[str, Any]] = {}
    for camera in cameras:
        components[f"{camera}_person"] = {
            "platform": "binary_sensor",
            "name": f"{camera} person",
            "device_class": "occupancy",
            "state_topic": topics.person(camera),
            "payload_on": PERSON_ON,
            "payload_off": PERSON_OFF,
        }
        components[f"{camera}_caption"] = {
            "platform": "sensor",
            "name": f"{camera} caption",
            "icon": "mdi:text-box-outline",
            "state_topic": topics.caption(camera),
            # Home Assistant keeps at most 255 characters of a state
            "value_template": "{{ value_json.caption[:255] }}",
            "json_attributes_topic": topics.caption(camera),
        }
        components[f"{camera}_camera"] = {
            "platform": "sensor",
            "name": f"{camera} camera",
            "device_class": "enum",
            "options": ["ok", "failed", "ended"],
            "entity_category": "diagnostic",
            "state_topic": topics.camera(camera),
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": topics.camera(camera),
        }
    components["alert"] = {
        "platform": "binary_sensor",
        "name": "alert",
        "device_class": "safety",
        "state_topic": topics.alert(),
        "value_template": "{{ 'ON' if value_json.level in ('warning', 'alarm') else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "off_delay": alert_hold,
        "json_attributes_topic": topics.alert(),
    }
    for name, test in ALERT_EVENTS.items():
        components[name] = {
            "platform": "event",
            "name": name.replace("_", " "),
            "state_topic": topics.alert(),
            "event_types": ["warning", "alarm"],
            # an alert of another kind renders "{}", which Home Assistant ignores
            "value_template": f'{{% if {test} %}}{{"event_type": "{{{{ value_json.level }}}}", '
            f'"text": {{{{ value_json.text | tojson }}}}, "camera": "{{{{ value_json.camera }}}}"}}'
            "{% else %}{}{% endif %}",
        }
    return {object_id: {**fields, "unique_id": f"{node}_{object_id}"} for object_id, fields in components.items()}


def discovery_messages(
    topics: Topics, cameras: Sequence[str], ha_prefix: str = "homeassistant", alert_hold: int = ALERT_HOLD
) -> list[Message]:
    """The retained device config for ``cameras`` (their configured names) of this device."""
    node = f"{topics.prefix}_{topics.device}"
    config = {
        "device": {"identifiers": [node], "name": topics.device, "model": MODEL, "sw_version": __version__},
        "origin": ORIGIN,
        "availability_topic": topics.status(),
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": 1,
        "components": _components(topics, cameras, node, alert_hold),
    }
    return [Message(f"{ha_prefix}/device/{node}/config", json.dumps(config, separators=(",", ":")), retain=True)]
