"""A private ``mosquitto`` on 127.0.0.1 and a free port, for the demo and the benchmark.

It listens on the loopback address only, keeps nothing on disk, and is always ended by its PID.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

LOCAL = "127.0.0.1"
START_WAIT = 5.0  # seconds mosquitto has to accept connections
INSTALL = "apt-get install mosquitto"


def installed() -> bool:
    return shutil.which("mosquitto") is not None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port: int = probe.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((LOCAL, port), timeout=0.2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def private_mosquitto(folder: Path) -> Iterator[int | None]:
    """Run mosquitto with its config and log in ``folder``; yields its port, or None when it did not come up."""
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} {LOCAL}\nallow_anonymous true\npersistence false\n"
        # started as root, mosquitto would switch to its own user
        f"user {getpass.getuser()}\nlog_type error\nlog_type warning\n"
    )
    with (folder / "mosquitto.log").open("ab") as output:
        process = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + START_WAIT
        while not accepts(port) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        yield port if process.poll() is None and accepts(port) else None
    finally:
        end(process)


def end(process: subprocess.Popen[bytes]) -> None:
    """End a broker by its PID: SIGTERM (it saves its state), SIGKILL after 5 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
