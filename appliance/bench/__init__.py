"""``appliance bench``: the pipeline against the bare interpreter, memory, idle cost and latency to MQTT.

Every figure comes from one run on one machine, and those with a target are ratios or budgets
that hold on a noisy machine: the pipeline is timed interleaved with the bare interpreter on the
same frames; idle and busy CPU come from the same service, scenes and window length. The same
command runs on a Pi. ``--quick`` shortens every phase to seconds (for CI): its figures show
that the benchmark works, not how fast anything is.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.bench import scenes
from appliance.bench.broker import open_broker
from appliance.bench.inference import (
    caption_timings,
    decode_timing,
    invoke_timings,
    model_sized,
    pipeline_vs_bare,
)
from appliance.bench.results import BenchReport, CpuResult, LatencyResult, Machine, MemoryResult, markdown
from appliance.bench.runs import FULL, QUICK, Plan, ServiceRuns
from appliance.bench.targets import figures
from appliance.config import Config
from appliance.inference.runtime import select_runtime, thread_count
from appliance.mqtt.topics import iso_time
from appliance.service import event_settings, inference_settings, load_configured_models


@dataclass(frozen=True)
class Sizes:
    """How much each in-process phase does."""

    invokes: int  # per model
    frames: int  # recorded frames
    pipeline_rounds: int  # passes over the frames, pipeline and bare interleaved
    decode_rounds: int
    caption_frames: int
    caption_rounds: int


QUICK_SIZES = Sizes(invokes=30, frames=8, pipeline_rounds=4, decode_rounds=10, caption_frames=2, caption_rounds=1)
FULL_SIZES = Sizes(invokes=500, frames=40, pipeline_rounds=50, decode_rounds=100, caption_frames=10, caption_rounds=5)


def _say(text: str) -> None:
    print(f"bench: {text}", flush=True)


def run_bench(config: Config, out: Path, quick: bool) -> int:
    """Measure, write ``out/bench.json`` and ``out/bench.md``, print the table; 0 once written (targets or not)."""
    sizes, plan = (QUICK_SIZES, QUICK) if quick else (FULL_SIZES, FULL)
    began, started = time.monotonic(), iso_time(time.time())
    settings = inference_settings(config)
    models = load_configured_models(config)
    machine = Machine.here(str(select_runtime()), thread_count(config.threads), models.manifest.folder)
    _say(f"{machine.describe()}; models {machine.models}")
    _say("timing each model's invoke")
    invoke = invoke_timings(models, sizes.invokes)
    frames = scenes.recorded_frames(sizes.frames)
    pipeline = pipeline_sized = decode = None
    if models.detector is not None:
        _say(f"timing the detection pipeline against the bare interpreter on {len(frames)} recorded frames")
        presence = event_settings(config, models.detector).presence
        pipeline = pipeline_vs_bare(models.detector, frames, presence, sizes.pipeline_rounds)
        sized = model_sized(models.detector, frames)
        pipeline_sized = pipeline_vs_bare(models.detector, sized, presence, sizes.pipeline_rounds)
        decode = decode_timing(models.detector, frames, sizes.decode_rounds)
    _say("timing captions")
    caption = caption_timings(models, settings, frames[: sizes.caption_frames], sizes.caption_rounds)
    del models, frames  # the service phases run in processes of their own
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as folder:
        work = Path(folder)
        with open_broker(config, work) as broker:
            _say(f"broker: {broker.describe()}")
            runs = ServiceRuns(config, broker, plan, work, out / "logs")
            memory, cpu, latency = _service_phases(runs, plan)
    report = BenchReport(
        quick=quick,
        started=started,
        seconds=time.monotonic() - began,
        machine=machine,
        invoke=invoke,
        pipeline=pipeline,
        pipeline_sized=pipeline_sized,
        decode=decode,
        caption=caption,
        memory=memory,
        cpu=cpu,
        latency=latency,
        figures=[],
    )
    report = replace(report, figures=figures(report))
    json_path, markdown_path = report.write(out)
    print(markdown(report), end="")
    _say(f"wrote {json_path} and {markdown_path}")
    return 0


def _service_phases(runs: ServiceRuns, plan: Plan) -> tuple[MemoryResult, CpuResult, LatencyResult]:
    _say("peak RSS with every model loaded")
    loaded = runs.models_loaded_mb()
    idle, person = [], []
    for round_number in range(plan.cpu_rounds):
        _say(f"CPU of the service: still empty scene, then a person present, {plan.cpu_window:.0f} s each")
        idle.append(runs.scene_cpu("still", round_number))
        person.append(runs.scene_cpu("person", round_number))
    _say(f"the synthetic run: {plan.run_seconds:.0f} s of visits, recording on (RSS growth, MQTT latencies)")
    memory, latency = runs.synthetic_run(loaded)
    return memory, CpuResult(idle, person), latency


__all__ = ["run_bench"]
