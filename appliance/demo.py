"""The ``appliance demo`` command: the synthetic world on both cameras, and what ``watch`` prints.

It needs nothing else and writes nothing outside a temporary folder. Each setting the environment
or ``--env-file`` does not give becomes the demo's: both cameras on a shipped scenario (looping),
the data folder (outbox and clips) a temporary one removed at the end, warnings only in the log,
and, when ``APPLIANCE_MQTT_HOST`` is not given, a private mosquitto on 127.0.0.1 and a free port.
The service runs in a thread of this process; the watch prints in the main one until ``stop``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from appliance.config import parse_config
from appliance.errors import ApplianceError
from appliance.logs import setup_logging
from appliance.mqtt import private_broker
from appliance.mqtt.watch import add_arguments, run_watch
from appliance.service import Service

STOP_WAIT = 30.0  # seconds the service has to finish its clips and say offline


def demo_values(given: Mapping[str, str], scenario: str, data: Path) -> dict[str, str]:
    """The settings the demo runs with: ``given`` over the demo's own."""
    values = {
        "APPLIANCE_CAMERA_0": f"sim:{scenario}?view=0&loop=1",
        "APPLIANCE_CAMERA_1": f"sim:{scenario}?view=1&loop=1",
        "APPLIANCE_DATA_DIR": str(data),
        "APPLIANCE_LOG_LEVEL": "warning",  # the watch's lines are the demo's output
    }
    values.update(given)
    return values


@contextlib.contextmanager
def _broker(values: dict[str, str], folder: Path, out: TextIO) -> Iterator[dict[str, str]]:
    """``values`` pointed at the configured broker, or at a private one for the ``with`` block."""
    if "APPLIANCE_MQTT_HOST" in values:
        yield values
        return
    if not private_broker.installed():
        raise ApplianceError(
            "no broker configured (APPLIANCE_MQTT_HOST) and mosquitto is not installed: "
            f"{private_broker.INSTALL}, or set APPLIANCE_MQTT_HOST"
        )
    with private_broker.private_mosquitto(folder) as port:
        if port is None:
            log = (folder / "mosquitto.log").read_text(errors="replace").strip()
            raise ApplianceError(f"the private mosquitto did not start: {log or 'no output'}")
        print(f"-- a private mosquitto on {private_broker.LOCAL}:{port}, for this demo only", file=out, flush=True)
        yield values | {
            "APPLIANCE_MQTT_HOST": private_broker.LOCAL,
            "APPLIANCE_MQTT_PORT": str(port),
            "APPLIANCE_MQTT_TLS": "0",
            "APPLIANCE_MQTT_USER": "",
            "APPLIANCE_MQTT_PASSWORD": "",
        }


def run_demo(given: Mapping[str, str], out: TextIO, stop: threading.Event, *, scenario: str) -> int:
    """Run until ``stop`` is set (or the service ends); the service's exit status."""
    with tempfile.TemporaryDirectory(prefix="appliance-demo-") as temp:
        folder = Path(temp)
        with _broker(demo_values(given, scenario, folder / "data"), folder, out) as values:
            config = parse_config(values)
            setup_logging(config.log_level)
            service = Service(config, environ={})  # never systemd's: the demo is not the unit
            status: list[int] = []
            failure: list[BaseException] = []

            def serve() -> None:
                try:
                    status.append(service.run(stop))
                except BaseException as error:  # handed to the main thread, which reports it
                    failure.append(error)
                finally:
                    stop.set()

            thread = threading.Thread(target=serve, name="demo-service", daemon=True)
            thread.start()
            watch_args = argparse.ArgumentParser()
            add_arguments(watch_args)
            run_watch(watch_args.parse_args([]), config, out, stop)
            thread.join(STOP_WAIT)
            if failure:
                raise failure[0]
            if thread.is_alive():
                raise ApplianceError(f"the service did not stop within {STOP_WAIT:g} s")
            return status[0]
