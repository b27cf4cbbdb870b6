"""The synthetic world as a camera: ``sim:SCENARIO[?seed=N&view=K&realtime=0&loop=1]``.

One camera (``view``, default 0) of a scenario (a shipped name or a path to a .json file), drawn by
:class:`appliance.sim.render.Renderer` with ``seed`` (default 0). It runs at the scenario's frame
rate by default (``realtime=0``: as fast as it draws) and ends at the scenario's end (``loop=1``:
starts over). It remembers the truth of the frames it delivered, and when it delivered them, so an
evaluation can tell what each grabbed frame showed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from appliance.cameras.file import Pacer
from appliance.cameras.source import CameraError, CameraSource, SourceSettings
from appliance.cameras.uri import CameraUri
from appliance.errors import ConfigError
from appliance.inference.imaging import Image
from appliance.sim.render import FrameTruth, Renderer
from appliance.sim.scenario import Scenario, load_scenario

KEEP = 3000  # truths remembered: five minutes at 10 fps


@dataclass(frozen=True)
class Delivered:
    time: float  # time.monotonic() when ``read`` returned the frame
    truth: FrameTruth


class SimSource(CameraSource):
    """One camera of a simulated scenario, with the truth of every frame it delivered."""

    def __init__(self, uri: CameraUri, settings: SourceSettings, keep: int = KEEP) -> None:
        super().__init__(uri, settings)
        self.seed = uri.option("seed", 0)
        self.view = uri.option("view", 0)
        self.realtime = bool(uri.option("realtime", 1))
        self.loop = bool(uri.option("loop", 0))
        self.scenario: Scenario | None = None  # set by start
        self.started: float | None = None  # time.monotonic() when frame 0 was due; set by start
        self._renderer: Renderer | None = None
        self._pacer: Pacer | None = None
        self._index = -1  # on the source's timeline, which keeps counting across loops
        # Appended by the grabber's thread, read by an evaluation's.
        self._delivered: deque[Delivered] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def fps(self) -> float:
        return self.scenario.fps if self.scenario is not None else self.settings.fps

    def check(self) -> None:
        scenario = self._scenario()
        if not 0 <= self.view < len(scenario.cameras):
            raise CameraError(
                f"{self.uri.text}: the scenario has {len(scenario.cameras)} camera(s), no view {self.view}"
            )

    def _scenario(self) -> Scenario:
        try:
            return load_scenario(self.uri.target)
        except ConfigError as error:
            raise CameraError(f"{self.uri.text}: {error}") from None

    def start(self) -> None:
        scenario = self._scenario()
        try:
            self._renderer = Renderer(scenario, self.view, self.seed)
        except ValueError as error:  # no such view
            raise CameraError(f"{self.uri.text}: {error}") from None
        self.scenario = scenario
        self._pacer = Pacer(scenario.fps, self.realtime)
        self.started = self._pacer.started
        self._index = -1

    def read(self) -> Image | None:
        if self._renderer is None or self._pacer is None:
            raise CameraError(f"{self.uri.text}: read before start")
        target = self._pacer.next_index(self._index)
        frames = self._renderer.scenario.frames
        if target >= frames and not self.loop:
            return None
        frame = self._renderer.frame(target % frames)
        self._index = target
        with self._lock:
            self._delivered.append(Delivered(time.monotonic(), frame.truth))
        return frame.image

    def deliveries(self) -> list[Delivered]:
        """The most recent frames delivered (at most ``keep``), oldest first."""
        with self._lock:
            return list(self._delivered)

    def truth_at(self, when: float) -> FrameTruth | None:
        """The truth of the last frame delivered at or before ``when``: pass a grabbed Frame's ``time``."""
        with self._lock:
            for delivered in reversed(self._delivered):
                if delivered.time <= when:
                    return delivered.truth
        return None

    def stop(self) -> None:
        self._renderer = None
        self._pacer = None
