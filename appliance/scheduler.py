"""Which camera the detector looks at next: round robin, gated by motion, at a total rate.

The detector is the costliest stage and serves both cameras, so the scheduler spends it where it
matters. Each tick (``1 / detect_fps`` apart) it takes the next camera, in turn, that has a frame
it has not looked at and that is due: it is watched (a person is there or arriving: always
detected), its scene moved recently (a cheap frame difference on a tiny grey image, every
``MOTION_EVERY`` seconds), or it has not been detected for ``idle_every`` seconds (a still, empty
scene is still checked now and then, in case someone stands very still or far away in it). A tick
with no camera due is skipped: an empty static scene costs four tiny comparisons a second and
little else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.cameras.source import Frame
from appliance.motion import MotionGate

MOTION_LINGER = 2.0  # seconds a camera stays due after its scene last moved
# Seconds between two motion checks of one camera: an arrival waits at most this long to be
# noticed, and a still scene costs four small comparisons a second per camera, whatever the tick rate.
MOTION_EVERY = 0.25
TICK_JITTER = 0.02  # a comparison due this much later than now is made now, not a tick later


@dataclass
class _Camera:
    slot: int
    latest: Callable[[], Frame | None]
    gate: MotionGate
    seen_index: int = -1  # newest frame index shown to the motion gate
    compared_at: float = float("-inf")  # when the motion gate last saw a frame
    detected_index: int = -1  # newest frame index detected
    last_detection: float = float("-inf")
    moved_at: float = float("-inf")
    watched: bool = False


@dataclass(frozen=True)
class Decision:
    frame: Frame
    reason: str  # watched, motion or idle


class Scheduler:
    """Picks the next frame to detect; owned by the service's main loop thread."""

    def __init__(
        self,
        cameras: Sequence[tuple[int, Callable[[], Frame | None]]],
        detect_fps: float,
        idle_every: float,
        motion_share: float,
    ) -> None:
        self.interval = 1.0 / detect_fps
        self.idle_every = idle_every
        self._cameras = [_Camera(slot, latest, MotionGate(motion_share)) for slot, latest in cameras]
        self._turn = 0
        self.skipped = 0  # ticks where no camera was due: what motion gating saved
        self.compared = 0  # frames shown to the motion gates
        self.motion_off = motion_share <= 0.0

    def set_watched(self, slot: int, watched: bool) -> None:
        """Whether the camera is detected at every tick (a person there or arriving), whatever its motion."""
        for camera in self._cameras:
            if camera.slot == slot:
                camera.watched = watched

    def next(self, now: float) -> Decision | None:
        """The frame to detect now, or None when no camera is due (the caller waits for the next tick)."""
        count = len(self._cameras)
        for offset in range(count):
            camera = self._cameras[(self._turn + offset) % count]
            frame = camera.latest()
            if frame is None or frame.index == camera.detected_index:
                continue
            if frame.index != camera.seen_index and now - camera.compared_at >= MOTION_EVERY - TICK_JITTER:
                camera.seen_index, camera.compared_at = frame.index, now
                self.compared += 1
                if self.motion_off or camera.gate.moved(frame.image):
                    camera.moved_at = now
            reason = self._due(camera, now)
            if reason is None:
                continue
            self._turn = (self._turn + offset + 1) % count
            camera.detected_index, camera.last_detection = frame.index, now
            return Decision(frame, reason)
        self.skipped += 1
        return None

    def _due(self, camera: _Camera, now: float) -> str | None:
        if camera.watched:
            return "watched"
        if now - camera.moved_at <= MOTION_LINGER:
            return "motion"
        if now - camera.last_detection >= self.idle_every:
            return "idle"
        return None
