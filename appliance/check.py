"""``appliance check``: validate the config, load every model slot, run each model, print a table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import TextIO

import numpy as np

from appliance.config import Config
from appliance.errors import ModelError
from appliance.inference.detector import Detector
from appliance.inference.loader import Models
from appliance.inference.runtime import select_runtime, thread_count
from appliance.service import CameraPlan, prepare, presence_scores, trust_of, unvalidated_alerts

CHECK_FRAME = (480, 640)  # height, width of the synthetic frame timed end to end


def median_ms(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``action`` in ms over ``repeats`` runs, after one untimed warm-up run."""
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    heading = "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()
    return "\n".join([heading, *lines]) + "\n"


def describe_detector(config: Config, detector: Detector) -> str:
    """The person classes and the presence scores in force, and where the scores came from."""
    names = [detector.labels[i] for i in sorted(detector.person_classes)]
    falls = [detector.labels[i] for i in sorted(detector.fall_classes)]
    scores = presence_scores(config, detector)
    motion = "lying where the picture changed" if config.presence_motion else "moving or not"
    return (
        f"person classes: {', '.join(names)}; fallen-person classes: {', '.join(falls) or 'none'}\n"
        f"presence: boxes from {scores.score:g} count people, from {scores.confirm:g} ({motion}) make one present; "
        f"from {scores.source}"
    )


def describe_trust(camera: CameraPlan, models: Models) -> str:
    """Which models may speak about ``camera`` (see appliance.events.trust)."""
    trust = trust_of(camera, models)
    said = {slot: trust.validated(slot) for slot in models.slots()}
    validated = [slot for slot, ok in said.items() if ok]
    others = [f"{slot} ({trust.domains.get(slot) or 'domain not said'})" for slot, ok in said.items() if not ok]
    return (
        f"{camera.name}: a {trust.world} camera; validated: {', '.join(validated) or 'none'}"
        f"; not validated (published, marked, never alerting): {', '.join(others) or 'none'}"
    )


def run_check(config: Config, out: TextIO, repeats: int = 5, environ: Mapping[str, str] | None = None) -> None:
    """Every check `run` makes before it opens a camera or the broker (service.prepare), then load and run
    every model slot; raises ConfigError or ModelError on the first problem."""
    prepared = prepare(config, os.environ if environ is None else environ)
    models = prepared.models
    slots = models.slots()
    if not slots:
        raise ModelError(f"{models.manifest.path}: lists no model slots")
    out.write(f"runtime: {select_runtime()}, {thread_count(config.threads)} threads\n")
    out.write(f"models: {models.manifest.folder}\n\n")
    rows = []
    for name, slot in slots.items():
        for model in slot.models.values():
            model.set_zero_inputs()
            inputs = model.inputs.values()
            rows.append(
                [
                    name,
                    model.path.name,
                    ", ".join("x".join(map(str, t.shape)) for t in inputs),
                    ", ".join(t.dtype.name for t in inputs),
                    f"{median_ms(model.invoke, repeats):.2f}",
                ]
            )
    out.write(format_table(["slot", "file", "input shape", "dtype", "ms/invoke"], rows))

    height, width = CHECK_FRAME
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out.write("\n")
    detector, classifier, captioner = models.detector, models.classifier, models.captioner
    if detector is not None:
        ms = median_ms(lambda: detector.detect(frame), repeats)
        out.write(f"detector: {ms:.2f} ms per {width}x{height} frame (letterbox, invoke, decode, NMS)\n")
        out.write(f"{describe_detector(config, detector)}\n")
    if classifier is not None:
        box = (width * 0.4, height * 0.2, width * 0.6, height * 0.9)
        ms = median_ms(lambda: classifier.classify(frame, box), repeats)
        out.write(f"classifier: {ms:.2f} ms per person crop\n")
    if captioner is not None:
        ms = median_ms(lambda: captioner.caption(frame), repeats)
        mirrored = ", the keyframe and its mirror image" if config.caption_mirror else ""
        out.write(f"captioner: {ms:.2f} ms per caption (beam width {config.caption_beam}{mirrored})\n")
    for camera in prepared.cameras:
        out.write(f"{describe_trust(camera, models)}\n")
    for line in unvalidated_alerts(config, prepared.cameras, models):
        out.write(f"warning: {line}\n")
    out.write("ok: the configuration is valid and every model loads and runs\n")
