"""The benchmark's figures, in table order, with the targets of the issue that asked for them."""

from __future__ import annotations

import statistics

from appliance.bench.results import BenchReport, Figure, PipelineResult, Spread, Target
from appliance.bench.scenes import FPS
from appliance.cameras.sim import KEEP

RATE_RATIO = Target(">=", 0.95)  # pre- and post-processing cost at most ~5 % of the detector's rate
DECODE_MS = Target("<=", 1.0)
RSS_MB = Target("<=", 250.0)
GROWTH_MB = Target("<", 5.0)
IDLE_RATIO = Target("<=", 0.15)  # an empty still scene costs a small share of a busy one


def _spread(key: str, label: str, spread: Spread, target: Target | None = None, note: str = "") -> list[Figure]:
    return [
        Figure(f"{key}.median", f"{label}, median", spread.median, "ms", target, note),
        Figure(f"{key}.p90", f"{label}, p90", spread.p90, "ms"),
    ]


# A Pi 4 runs int8 convolutions on its four Cortex-A72 cores with XNNPACK at about 7 to 11 G
# multiply-adds a second: the design's 100 to 150 ms for a YOLOv8n at 320 (1.1 G). An estimate from
# the graph's size, not a measurement.
PI4_MAC_PER_S = (7e9, 11e9)


def _invoke(report: BenchReport) -> list[Figure]:
    found = []
    for timing in report.invoke:
        label = f"Invoke, {timing.slot} {timing.role} (`{timing.file}`, {timing.threads} threads)"
        found += _spread(f"invoke.{timing.slot}.{timing.role}", label, timing.ms)
        slow, fast = (timing.multiply_adds / rate * 1000.0 for rate in PI4_MAC_PER_S)
        found.append(
            Figure(
                f"estimate.pi4.{timing.slot}.{timing.role}",
                f"Pi 4 estimate, {timing.slot} {timing.role}: {timing.multiply_adds / 1e9:.2f} G multiply-adds",
                slow,
                "ms",
                note=f"{fast:.0f} to {slow:.0f} ms at 11 to 7 G multiply-adds a second (an estimate, not measured)",
            )
        )
    return found


def _how(result: PipelineResult) -> str:
    return (
        f"{result.frames} frames of {'x'.join(map(str, result.frame_size))} ({result.people_per_frame:.1f} "
        f"detections each) into a {'x'.join(map(str, result.input_size))} input; pipeline and bare interpreter "
        "interleaved frame by frame, rates from median times"
    )


def _pipeline(report: BenchReport) -> list[Figure]:
    result, sized = report.pipeline, report.pipeline_sized
    if result is None or sized is None:
        return [
            Figure("pipeline.rate_ratio", "Detection pipeline / bare invoke, rate", None, "", RATE_RATIO, "no detector")
        ]
    size = "x".join(map(str, sized.frame_size))
    return [
        Figure(
            "pipeline.bare_fps", "Detector, bare interpreter (set input, invoke, read output)", result.bare_fps, "fps"
        ),
        Figure(
            "pipeline.pipeline_fps",
            "Detection pipeline (grab, letterbox, invoke, decode, NMS, presence)",
            result.pipeline_fps,
            "fps",
        ),
        Figure(
            "pipeline.rate_ratio",
            "Detection pipeline / bare invoke, rate",
            result.rate_ratio,
            "",
            RATE_RATIO,
            _how(result),
        ),
        Figure("pipeline.overhead_ms", "Pipeline minus bare invoke, per frame", result.overhead_ms, "ms"),
        Figure(
            "pipeline.sized_rate_ratio",
            f"Detection pipeline / bare invoke, rate, frames already {size}",
            sized.rate_ratio,
            "",
            RATE_RATIO,
            f"{_how(sized)}: what a camera stream sized for the detector gives (picamera2's lores stream on a Pi), "
            "so the letterbox only pads it",
        ),
        Figure("pipeline.sized_overhead_ms", f"Pipeline minus bare invoke, per {size} frame", sized.overhead_ms, "ms"),
    ]


def _decode(report: BenchReport) -> list[Figure]:
    result = report.decode
    if result is None:
        return [
            Figure(
                "decode.median",
                "Decode + NMS, median",
                None,
                "ms",
                DECODE_MS,
                "the detector's family has no separate decode",
            )
        ]
    label = f"Decode + NMS, {result.anchors} anchors, {result.classes} class(es)"
    return _spread(
        "decode", label, result.ms, DECODE_MS, f"the detector's real outputs on {result.frames} recorded frames"
    )


def _caption(report: BenchReport) -> list[Figure]:
    found = []
    for result in report.caption:
        kind = "greedy" if result.beam_width == 1 else f"beam {result.beam_width}"
        reads = "the frame and its mirror image" if result.mirror else "encoder and decoder loop"
        label = f"Caption ({kind}: {reads}, {result.tokens:.1f} tokens)"
        key = f"caption.beam{result.beam_width}" + (".mirrored" if result.mirror else "")
        found += _spread(key, label, result.ms)
    return found


def _memory(report: BenchReport) -> list[Figure]:
    memory = report.memory
    minutes = f"{memory.run_seconds / 60:.1f} min" if memory.run_seconds >= 60 else f"{memory.run_seconds:.0f} s"
    events = f", {memory.events} events" if memory.events is not None else ""
    return [
        Figure(
            "memory.models_loaded",
            "Peak RSS, all three models loaded and run",
            memory.models_loaded_mb,
            "MB",
            RSS_MB,
            "a process that loads every slot and runs each model once (`appliance check`)",
        ),
        Figure(
            "memory.run_peak",
            f"Peak RSS, synthetic run ({minutes})",
            memory.run_peak_mb,
            "MB",
            RSS_MB,
            "the service with two simulated cameras, recording on; includes the synthetic world's renderer",
        ),
        Figure(
            "memory.growth",
            f"RSS growth over the synthetic run ({minutes}{events})",
            memory.growth_mb,
            "MB",
            GROWTH_MB,
            "median RSS of the last samples minus that of the first after warm-up; the synthetic cameras keep "
            f"the truth of their last {KEEP:,} frames ({KEEP / FPS / 60:.0f} min), which a device does not",
        ),
    ]


def _cpu(report: BenchReport) -> list[Figure]:
    cpu = report.cpu
    seconds = sum(s.wall_s for s in cpu.idle)
    how = (
        f"the service on two simulated cameras, {seconds:.0f} s per scene; service CPU is the process's "
        f"less its camera threads, which draw the synthetic world (with them the ratio is {cpu.process_ratio:.3f})"
    )
    rates = [
        (scene, [s.detections_per_s for s in scenes if s.detections_per_s is not None])
        for scene, scenes in (("still", cpu.idle), ("person", cpu.person))
    ]
    return [
        Figure("cpu.idle", "Service CPU, still empty scene", cpu.idle_per_s * 100.0, "% of a core"),
        Figure("cpu.person", "Service CPU, person present", cpu.person_per_s * 100.0, "% of a core"),
        Figure("cpu.ratio", "Service CPU, still empty / person present", cpu.ratio, "", IDLE_RATIO, how),
        *[
            Figure(f"cpu.detections.{scene}", f"Detections per second, {scene} scene", statistics.fmean(values), "/s")
            for scene, values in rates
            if values
        ],
    ]


LATENCY_NOTES = {
    "latency.person_on": "the truth counts a person once half of them shows: below zero, the detector was quicker",
    "latency.caption": "includes the wait for the period's best frame (up to APPLIANCE_KEYFRAME_EVERY)",
    "latency.delivery": "from the describer's result to the subscriber: main loop, outbox, publisher, broker",
}


def _latency(report: BenchReport) -> list[Figure]:
    latency = report.latency
    found = []
    for key, label, values in (
        ("latency.person_on", "First frame with a person to MQTT person ON", latency.person_on_s),
        ("latency.caption", "Keyframe grabbed to MQTT caption", latency.caption_s),
        ("latency.delivery", "Caption described to MQTT caption", latency.caption_delivery_s),
    ):
        if latency.not_measured:
            note = latency.not_measured
        elif values:
            note = f"{len(values)} message(s) through the {latency.broker}; {LATENCY_NOTES[key]}"
        else:
            note = f"no message arrived through the {latency.broker}"
        median = statistics.median(values) if values else None
        found.append(Figure(f"{key}.median", f"{label}, median", median, "s", None, note))
        found.append(Figure(f"{key}.max", f"{label}, max", max(values) if values else None, "s"))
    return found


def figures(report: BenchReport) -> list[Figure]:
    return [
        *_invoke(report),
        *_pipeline(report),
        *_decode(report),
        *_caption(report),
        *_memory(report),
        *_cpu(report),
        *_latency(report),
    ]
