"""Home Assistant MQTT discovery: the retained config messages that make the appliance's sensors appear.

Topics are ``<ha_prefix>/<component>/<prefix>_<device>/<object>/config``. Per camera: a person
binary sensor (occupancy, from the retained ON/OFF topic), the last caption (a sensor whose
attributes are the whole caption payload) and the camera's health (a diagnostic enum sensor).
Per device: an alert binary sensor (safety) that turns on with a warning or alarm and off again
``alert_hold`` seconds later, since alerts are events, not states. Every entity is unavailable
while the status topic says ``offline`` and belongs to one device block.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from appliance import __version__
from appliance.mqtt.topics import OFFLINE, ONLINE, PERSON_OFF, PERSON_ON, Message, Topics

ALERT_HOLD = 300  # seconds the alert sensor stays on after the latest alert
MODEL = "Raspberry Pi camera appliance"


def discovery_messages(
    topics: Topics, cameras: Sequence[str], ha_prefix: str = "homeassistant", alert_hold: int = ALERT_HOLD
) -> list[Message]:
    """The retained discovery configs for ``cameras`` (their configured names) of this device."""
    node = f"{topics.prefix}_{topics.device}"
    common = {
        "availability_topic": topics.status(),
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": 1,
        "device": {"identifiers": [node], "name": topics.device, "model": MODEL, "sw_version": __version__},
    }
    entities: list[tuple[str, str, dict[str, Any]]] = []  # component, object id, its own fields
    for camera in cameras:
        entities.append(
            (
                "binary_sensor",
                f"{camera}_person",
                {
                    "name": f"{camera} person",
                    "device_class": "occupancy",
                    "state_topic": topics.person(camera),
                    "payload_on": PERSON_ON,
                    "payload_off": PERSON_OFF,
                },
            )
        )
        entities.append(
            (
                "sensor",
                f"{camera}_caption",
                {
                    "name": f"{camera} caption",
                    "icon": "mdi:text-box-outline",
                    "state_topic": topics.caption(camera),
                    # Home Assistant keeps at most 255 characters of a state
                    "value_template": "{{ value_json.caption[:255] }}",
                    "json_attributes_topic": topics.caption(camera),
                },
            )
        )
        entities.append(
            (
                "sensor",
                f"{camera}_camera",
                {
                    "name": f"{camera} camera",
                    "device_class": "enum",
                    "options": ["ok", "failed", "ended"],
                    "entity_category": "diagnostic",
                    "state_topic": topics.camera(camera),
                    "value_template": "{{ value_json.state }}",
                    "json_attributes_topic": topics.camera(camera),
                },
            )
        )
    entities.append(
        (
            "binary_sensor",
            "alert",
            {
                "name": "alert",
                "device_class": "safety",
                "state_topic": topics.alert(),
                "value_template": "{{ 'ON' if value_json.level in ('warning', 'alarm') else 'OFF' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "off_delay": alert_hold,
                "json_attributes_topic": topics.alert(),
            },
        )
    )
    return [
        Message(
            f"{ha_prefix}/{component}/{node}/{object_id}/config",
            json.dumps({"unique_id": f"{node}_{object_id}", **fields, **common}, separators=(",", ":")),
            retain=True,
        )
        for component, object_id, fields in entities
    ]
