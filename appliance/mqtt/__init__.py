"""MQTT: the durable outbox, the publisher, topics and payloads, Home Assistant discovery, `appliance watch`."""
