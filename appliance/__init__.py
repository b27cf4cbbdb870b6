"""A camera appliance for a Raspberry Pi: two cameras in, text over MQTT out."""

__version__ = "0.1.0"
