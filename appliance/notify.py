"""systemd notification: READY once models and cameras are up, WATCHDOG while no thread hangs.

The protocol is one datagram to the socket named by ``$NOTIFY_SOCKET`` (what ``sd_notify`` and
python3-systemd's ``daemon.notify`` send); speaking it directly keeps the service free of a
compiled dependency. Without ``$NOTIFY_SOCKET`` (a desktop, the tests) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_period: float | None = int(usec) / 1e6 if wanted else None
        self._last_ping = float("-inf")
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, state: str) -> None:
        if self._socket is None:
            return
        address = self._address
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        try:
            self._socket.sendto(state.encode(), address)
        except OSError as error:
            log.warning("systemd notification %r failed: %s", state.split("=", maxsplit=1)[0], error)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self, now: float | None = None) -> None:
        """Ping the watchdog, at most twice per period (systemd's advice: half the period keeps a margin)."""
        if self.watchdog_period is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_ping >= self.watchdog_period / 2:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
