"""The describer: classifier on each person crop and captioner on the keyframe, in a thread of its own.

Captioning takes up to a second on a Pi: run on the detection thread it would blind both cameras
for that long. The describer holds at most one waiting keyframe (a newer one replaces it: an old
keyframe is worth less than a fresh one) and at most a few finished descriptions for the main
loop to collect; memory stays bounded whatever the load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from appliance.cameras.source import Frame
from appliance.inference.captioner import Caption, Captioner
from appliance.inference.classifier import Classifier
from appliance.inference.imaging import Box

log = logging.getLogger(__name__)

MAX_CROPS = 4  # the largest people of a keyframe are classified; a crowd would take seconds
MAX_RESULTS = 16


@dataclass(frozen=True)
class Keyframe:
    event_id: str
    camera: int
    frame: Frame
    boxes: tuple[Box, ...]  # the counted people, best score first
    score: float  # the best person score: why this frame was chosen
    down: int = 0  # people of the detector's fall classes, while the fall is held
    holding: tuple[str, ...] = ()  # objects of concern whose box lies on a counted person's


@dataclass(frozen=True)
class Description:
    keyframe: Keyframe
    caption: Caption | None  # None without a captioner slot
    labels: dict[str, float]  # per label, the highest probability over the classified crops
    classify_ms: float
    caption_ms: float
    done: float  # time.monotonic() when finished


class Describer:
    """Runs the classifier and the captioner on submitted keyframes; owns both models."""

    def __init__(self, classifier: Classifier | None, captioner: Captioner | None) -> None:
        self.classifier, self.captioner = classifier, captioner
        self._lock = threading.Condition()
        self._pending: Keyframe | None = None
        self._results: deque[Description] = deque(maxlen=MAX_RESULTS)
        self._stopping = False
        self._busy_since: float | None = None  # time.monotonic() when the keyframe being described was taken
        self._thread = threading.Thread(target=self._run, name="describer", daemon=True)
        self.replaced = 0  # keyframes dropped for a newer one before they were described
        self.described = 0
        self.error: BaseException | None = None  # why the thread stopped, for the service to act on
        self.finished = threading.Event()  # set when a description or an error is ready: the main loop wakes on it

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, keyframe: Keyframe) -> None:
        with self._lock:
            if self._pending is not None:
                self.replaced += 1
            self._pending = keyframe
            self._lock.notify_all()

    def results(self) -> list[Description]:
        """The descriptions finished since the last call, oldest first."""
        with self._lock:
            done = list(self._results)
            self._results.clear()
        return done

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._pending is None and self._busy_since is None

    def stuck(self, now: float, limit: float) -> bool:
        """Whether the thread is gone or has been describing one keyframe for more than ``limit`` seconds."""
        with self._lock:
            busy_since = self._busy_since
        return not self.alive or (busy_since is not None and now - busy_since > limit)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while self._pending is None and not self._stopping:
                        self._lock.wait()
                    if self._stopping:
                        return
                    keyframe, self._pending = self._pending, None
                    self._busy_since = time.monotonic()
                assert keyframe is not None
                description = self.describe(keyframe)
                with self._lock:
                    self._results.append(description)
                    self._busy_since = None
                    self.described += 1
                self.finished.set()
        except Exception as error:  # reported to the service, which decides (it exits for systemd to restart)
            log.exception("the describer stopped")
            self.error = error
            self.finished.set()

    def describe(self, keyframe: Keyframe) -> Description:
        image = keyframe.frame.image
        labels: dict[str, float] = {}
        start = time.perf_counter()
        if self.classifier is not None:
            for box in keyframe.boxes[:MAX_CROPS]:
                for label, score in self.classifier.classify(image, box).scores.items():
                    labels[label] = max(labels.get(label, 0.0), score)
        middle = time.perf_counter()
        caption = self.captioner.caption(image) if self.captioner is not None else None
        end = time.perf_counter()
        return Description(
            keyframe, caption, labels, (middle - start) * 1000.0, (end - middle) * 1000.0, time.monotonic()
        )
