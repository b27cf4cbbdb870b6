"""Presence per camera, with hysteresis: present after k of the last n detections, absent after a hold.

One detector mistake must neither start an event nor end one: a person is present once ``hits``
of the last ``window`` detections found one surely (a box scoring at least ``confirm_score``), and
absent once no detection has found one (at least ``min_score``) for ``hold`` seconds. The two
scores are a hysteresis too, as Frigate's ``threshold`` and ``min_score`` are: a shadow or a
swaying plant that just passes ``min_score`` now and then starts no event, while a person who is
present and turns away or steps half behind a shelf stays present. Boxes below ``min_score`` or an
area (a share of the frame) do not count at all: small, unsure boxes are where clutter and shadows
become false people.

With ``moving`` on, a sure box makes a person present only where the picture changed since the
camera's previous detection (see ``appliance.motion``): a real detector scores a fruit bowl or a
photo on the wall as high as a real person far away, but they never move.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.inference.detector import Detection


@dataclass(frozen=True)
class PresenceSettings:
    hits: int = 2
    window: int = 4
    confirm_score: float = 0.7  # boxes below it (and at least min_score) count people but start no presence
    hold: float = 6.0
    min_score: float = 0.5
    min_area: float = 0.001  # share of the frame's area
    moving: bool = True  # a sure box must lie where the picture changed to make a person present


@dataclass(frozen=True)
class Change:
    present: bool
    time: float  # arrival: the detection that confirmed it; departure: the last detection that saw someone


class PresenceTracker:
    """One camera's presence; fed by the main loop, which owns it."""

    def __init__(self, settings: PresenceSettings, person_classes: frozenset[int]) -> None:
        self.settings = settings
        self.person_classes = person_classes
        self._recent: deque[bool] = deque(maxlen=settings.window)
        self.present = False
        self.persons = 0  # people counted in the latest detection
        self.people: list[Detection] = []  # the counted boxes of the latest detection
        self.last_seen = float("-inf")

    def counted(self, detections: Sequence[Detection], frame_area: float) -> list[Detection]:
        """The detections that count as people."""
        s = self.settings
        least = s.min_area * frame_area
        return [
            d for d in detections if d.class_id in self.person_classes and d.score >= s.min_score and d.area >= least
        ]

    @property
    def arriving(self) -> bool:
        """Not yet present, but one of the window's detections found someone surely: the next ones decide."""
        return not self.present and any(self._recent)

    def update(
        self, detections: Sequence[Detection], frame_area: float, time: float, moved: Callable[[Detection], bool]
    ) -> Change | None:
        """Take one detection's boxes (``moved`` tells whether a box lies where the picture changed);
        returns the change of presence it caused, if any."""
        self.people = self.counted(detections, frame_area)
        self.persons = len(self.people)
        seen = self.persons > 0
        s = self.settings
        # Sure sightings count only towards presence: once present they need not be told (nor moved asked).
        self._recent.append(
            not self.present and any(d.score >= s.confirm_score and (not s.moving or moved(d)) for d in self.people)
        )
        if seen:
            self.last_seen = time
        if not self.present and sum(self._recent) >= self.settings.hits:
            self.present = True
            return Change(True, time)
        return self.expire(time)

    def expire(self, time: float) -> Change | None:
        """Absent once nobody was seen for ``hold`` seconds; also called when no detection comes (a failed camera)."""
        if self.present and time - self.last_seen >= self.settings.hold:
            self.present = False
            self._recent.clear()
            self.persons, self.people = 0, []
            return Change(False, self.last_seen)
        return None
