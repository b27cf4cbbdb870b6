"""Model timings in the benchmark's own process: bare invokes, the detection pipeline against them,
decode + NMS, and captions greedy and with the configured beam.

The pipeline and the bare interpreter are timed interleaved, frame by frame (each round swaps
which goes first), so a noisy neighbour on the machine slows both alike and their ratio holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from appliance.bench.results import CaptionResult, DecodeResult, InvokeTiming, PipelineResult, Spread
from appliance.bench.scenes import RecordedFrame
from appliance.cameras.source import Frame
from appliance.events.presence import PresenceSettings, PresenceTracker
from appliance.inference.captioner import Captioner, CaptionerSettings
from appliance.inference.detector import Detector
from appliance.inference.imaging import Image, Letterbox
from appliance.inference.loader import CAPTIONERS, Models, build_slot
from appliance.inference.model import TFLiteModel
from appliance.inference.runtime import make_interpreter
from appliance.inference.settings import InferenceSettings
from appliance.inference.yolov8 import Yolov8Detector
from appliance.motion import BoxMotion


def _time_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000.0


def multiply_adds(model: TFLiteModel) -> int:
    """The multiply-adds of one invoke, counted from the graph's convolutions and fully connected layers
    (the rest, activations and reshapes, is small beside them)."""
    interpreter = make_interpreter(str(model.path), 1)
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        name, inputs, outputs = op["op_name"], op["inputs"], op["outputs"]
        out = int(np.prod(shapes[outputs[0]])) if len(outputs) else 0
        if name == "CONV_2D":  # filter [out channels, kh, kw, in channels]
            total += out * int(np.prod(shapes[inputs[1]][1:]))
        elif name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, channels]
            total += out * int(np.prod(shapes[inputs[1]][1:3]))
        elif name == "FULLY_CONNECTED":  # weights [out, in]
            total += out * int(shapes[inputs[1]][-1])
    return total


def invoke_timings(models: Models, runs: int) -> list[InvokeTiming]:
    """Per model of every slot: invoke alone, on zero inputs (XNNPACK's time does not depend on the values)."""
    timings = []
    for slot_name, slot in models.slots().items():
        for role, model in slot.models.items():
            model.set_zero_inputs()
            model.invoke()  # warm-up: the first invoke prepares XNNPACK's kernels
            samples = [_time_ms(model.invoke) for _ in range(runs)]
            timings.append(
                InvokeTiming(slot_name, role, model.path.name, model.threads, Spread.of(samples), multiply_adds(model))
            )
    return timings


class _Pipeline:
    """The main loop's detection path for one camera, and the bare interpreter on the same frames."""

    def __init__(self, detector: Detector, frames: list[RecordedFrame], presence: PresenceSettings) -> None:
        self.detector = detector
        self.images = [f.image for f in frames]
        self.model = next(iter(detector.models.values()))
        self.input, self.output = self.model.only_input(), self.model.only_output()
        self.tracker = PresenceTracker(presence, detector.person_classes)
        self.motion = BoxMotion()
        height, width = self.images[0].shape[:2]
        self.area = float(width * height)
        self.found = 0
        # Each frame's model input as the pipeline makes it: what the bare interpreter is given.
        self.inputs: list[npt.NDArray[Any]] = []
        for image in self.images:
            self.found += len(detector.detect(image))
            self.inputs.append(self.model.get_raw(self.input))
        self.index = 0

    def step(self, i: int) -> None:
        """Grab (the grabber's newest frame), letterbox, encode, invoke, decode, NMS, box motion, presence."""
        self.index += 1
        frame = Frame(0, self.index, time.monotonic(), self.images[i])
        detections = self.detector.detect(frame.image)
        self.motion.update(frame.image)
        self.tracker.update(detections, self.area, frame.time, self.motion.moved)

    def bare(self, i: int) -> None:
        self.model.set_raw(self.input, self.inputs[i])
        self.model.invoke()
        self.model.get_raw(self.output)


def pipeline_vs_bare(
    detector: Detector, frames: list[RecordedFrame], presence: PresenceSettings, rounds: int
) -> PipelineResult:
    pipeline = _Pipeline(detector, frames, presence)
    bare: list[float] = []
    full: list[float] = []
    count = len(frames)
    for i in range(count):  # warm-up, untimed
        pipeline.step(i)
        pipeline.bare(i)
    for round_number in range(rounds):
        for i in range(count):
            if round_number % 2:
                full.append(_time_ms(partial(pipeline.step, i)))
                bare.append(_time_ms(partial(pipeline.bare, i)))
            else:
                bare.append(_time_ms(partial(pipeline.bare, i)))
                full.append(_time_ms(partial(pipeline.step, i)))
    bare_spread, full_spread = Spread.of(bare), Spread.of(full)
    height, width = frames[0].image.shape[:2]
    _, input_height, input_width, _ = pipeline.input.shape
    return PipelineResult(
        frames=count,
        frame_size=(width, height),
        input_size=(input_width, input_height),
        people_per_frame=pipeline.found / count,
        bare=bare_spread,
        pipeline=full_spread,
        bare_fps=1000.0 / bare_spread.median,
        pipeline_fps=1000.0 / full_spread.median,
        rate_ratio=bare_spread.median / full_spread.median,
        overhead_ms=full_spread.median - bare_spread.median,
    )


def model_sized(detector: Detector, frames: list[RecordedFrame]) -> list[RecordedFrame]:
    """The frames as a camera stream sized for the detector would deliver them: already the letterbox's size."""
    _, height, width, _ = next(iter(detector.models.values())).only_input().shape
    frame_height, frame_width = frames[0].image.shape[:2]
    layout = Letterbox.fit(frame_width, frame_height, width, height)
    size = (layout.width, layout.height)
    sized = []
    for frame in frames:
        image: Image = np.empty((layout.height, layout.width, 3), np.uint8)
        cv2.resize(frame.image, size, dst=image, interpolation=cv2.INTER_AREA)
        sized.append(RecordedFrame(image, frame.people))
    return sized


def decode_timing(detector: Detector, frames: list[RecordedFrame], rounds: int) -> DecodeResult | None:
    """Decode + NMS of the detector's real outputs on the recorded frames; None for families without a decode step."""
    if not isinstance(detector, Yolov8Detector):
        return None
    model = next(iter(detector.models.values()))
    output = model.only_output()
    raws = []
    for frame in frames:
        detector.detect(frame.image)
        raws.append(model.get_raw(output)[0])
    for raw in raws:
        detector.decode(raw)
    samples = [_time_ms(partial(detector.decode, raw)) for _ in range(rounds) for raw in raws]
    return DecodeResult(detector.anchors, len(detector.class_ids), len(raws), Spread.of(samples))


def _captioner(models: Models, settings: InferenceSettings, search: CaptionerSettings) -> Captioner:
    return build_slot(models.manifest, "captioner", CAPTIONERS, replace(settings, captioner=search))


def caption_timings(
    models: Models, settings: InferenceSettings, frames: list[RecordedFrame], rounds: int
) -> list[CaptionResult]:
    """Whole captions (encoder, then the decoder loop), greedy on the frame alone and as configured, on
    frames with people."""
    if models.captioner is None:
        return []
    results = []
    configured = settings.captioner
    cheapest = replace(configured, beam_width=1, mirror=False)
    for search in [cheapest] + ([configured] if configured != cheapest else []):
        captioner = _captioner(models, settings, search)
        captioner.caption(frames[0].image)
        samples, tokens = [], []
        for _ in range(rounds):
            for frame in frames:
                start = time.perf_counter()
                caption = captioner.caption(frame.image)
                samples.append((time.perf_counter() - start) * 1000.0)
                tokens.append(len(caption.tokens))
        results.append(CaptionResult(search.beam_width, search.mirror, Spread.of(samples), sum(tokens) / len(tokens)))
    return results
