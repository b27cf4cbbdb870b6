"""The events still open, kept on disk, so that a power cut or a kill mid-event does not leave them open.

The event manager notes each event when it starts, now and then while it lasts (when the person was
last seen, the most people, the alert, the labels), and forgets it when it ends. At the next start
the service ends what is left (``interrupted``), with the clip that the clip store made whole, and
sets every camera's retained person state to OFF until someone is seen again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from appliance.events.reports import AlertLevel

log = logging.getLogger(__name__)

NOTE_EVERY = 5.0  # seconds between notes of a running event: what a power cut may cost of its last-seen time


@dataclass
class OpenEvent:
    event_id: str
    camera: str
    started: float  # wall-clock seconds
    last_seen: float  # wall-clock seconds: when the person was last seen
    max_persons: int
    alert: AlertLevel = "none"
    labels: dict[str, float] = field(default_factory=dict)
    clip: str | None = None


class EventJournal:
    """``events.json`` in the data folder; owned by the thread of the event manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: dict[str, OpenEvent] = {}
        self._noted: dict[str, float] = {}  # event id -> wall time of its last note

    def take_leftovers(self) -> list[OpenEvent]:
        """The events the previous run left open (it died mid-event), forgotten from now on."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            events = [OpenEvent(**entry) for entry in data["open"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("%s is unreadable (%s): the events it held cannot be ended", self.path, error)
            events = []
        self._write()
        return events

    def note(self, event: OpenEvent, force: bool = False) -> None:
        """Keep ``event`` (as it is now) on disk: at once when ``force`` (it started), else at most every NOTE_EVERY."""
        self._open[event.event_id] = event
        if force or event.last_seen - self._noted.get(event.event_id, float("-inf")) >= NOTE_EVERY:
            self._noted[event.event_id] = event.last_seen
            self._write()

    def forget(self, event_id: str) -> None:
        if self._open.pop(event_id, None) is not None:
            self._noted.pop(event_id, None)
            self._write()

    def _write(self) -> None:
        """Replace the file, durably (its data on the disk before the rename); a failure is logged, not raised."""
        staging = self.path.with_name(self.path.name + ".new")
        try:
            with staging.open("w", encoding="utf-8") as stream:
                json.dump({"open": [asdict(event) for event in self._open.values()]}, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(staging, self.path)
        except OSError as error:
            log.error("%s could not be written: %s", self.path, error)
