"""What the benchmark measured: typed results per section, the figures with their targets, and the report files.

Every figure carries its target (when the issue sets one) and whether it was met; a figure that
could not be measured has no value and says why. ``bench.json`` holds the sections in full and
the figures; ``bench.md`` holds the figures as one table, for the README.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Comparison = Literal["<=", ">=", "<"]


@dataclass(frozen=True)
class Target:
    comparison: Comparison
    bound: float

    def met(self, value: float) -> bool:
        if self.comparison == "<=":
            return value <= self.bound
        if self.comparison == ">=":
            return value >= self.bound
        return value < self.bound

    def __str__(self) -> str:
        return f"{self.comparison} {self.bound:g}"


@dataclass(frozen=True)
class Figure:
    """One line of the table: a measured value, or None with the reason it was not measured."""

    key: str  # stable name, e.g. "pipeline.rate_ratio"
    label: str
    value: float | None
    unit: str
    target: Target | None = None
    note: str = ""  # how it was measured, or why it was not

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.target.met(self.value)

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "target": None
            if self.target is None
            else {"comparison": self.target.comparison, "bound": self.target.bound},
            "met": self.met,
            "note": self.note,
        }


@dataclass(frozen=True)
class Spread:
    """Median and 90th percentile of repeated timings, in ms."""

    median: float
    p90: float
    runs: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> Spread:
        ordered = sorted(samples_ms)
        return cls(_percentile(ordered, 50.0), _percentile(ordered, 90.0), len(ordered))


def _percentile(ordered: list[float], percent: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), of an ascending list."""
    position = (len(ordered) - 1) * percent / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class InvokeTiming:
    slot: str
    role: str  # the model's role in its slot: model, encoder, decoder
    file: str
    threads: int
    ms: Spread
    multiply_adds: int  # counted from the graph: convolutions and fully connected layers


@dataclass(frozen=True)
class PipelineResult:
    frames: int  # distinct recorded frames, each timed ``rounds`` times
    frame_size: tuple[int, int]  # width, height
    input_size: tuple[int, int]
    people_per_frame: float  # detections per frame, on average
    bare: Spread  # set the prepared input, invoke, read the output
    pipeline: Spread  # grab, letterbox, encode, invoke, decode, NMS, presence
    bare_fps: float
    pipeline_fps: float
    rate_ratio: float  # pipeline_fps / bare_fps, from interleaved timings of the same frames
    overhead_ms: float  # pipeline minus bare, per frame (medians)


@dataclass(frozen=True)
class DecodeResult:
    anchors: int
    classes: int
    frames: int
    ms: Spread


@dataclass(frozen=True)
class CaptionResult:
    beam_width: int
    mirror: bool  # the frame and its mirror image read
    ms: Spread
    tokens: float  # mean caption length in tokens


@dataclass(frozen=True)
class MemoryResult:
    models_loaded_mb: float  # peak RSS of a process that loaded and ran every model, and nothing else
    run_seconds: float  # length of the synthetic run
    run_peak_mb: float | None
    run_start_mb: float | None  # RSS once warm (median of the first samples after warm-up)
    run_end_mb: float | None  # median of the last samples
    growth_mb: float | None
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, RSS MB)
    events: int | None = None  # events the run went through (they exercise clips, captions, the outbox)


@dataclass(frozen=True)
class SceneCpu:
    scene: str
    wall_s: float
    process_cpu_s: float  # the whole service process
    camera_cpu_s: float  # its grabber threads, which draw the synthetic world (a camera's job on a device)
    detections_per_s: float | None  # from the service's stats messages, when a broker carried them

    @property
    def service_cpu_per_s(self) -> float:
        return (self.process_cpu_s - self.camera_cpu_s) / self.wall_s

    @property
    def process_cpu_per_s(self) -> float:
        return self.process_cpu_s / self.wall_s


@dataclass(frozen=True)
class CpuResult:
    idle: list[SceneCpu]
    person: list[SceneCpu]

    @staticmethod
    def _per_s(scenes: list[SceneCpu], process: bool) -> float:
        wall = sum(s.wall_s for s in scenes)
        cpu = sum(s.process_cpu_s - (0.0 if process else s.camera_cpu_s) for s in scenes)
        return cpu / wall

    @property
    def idle_per_s(self) -> float:
        return self._per_s(self.idle, process=False)

    @property
    def person_per_s(self) -> float:
        return self._per_s(self.person, process=False)

    @property
    def ratio(self) -> float:
        return self.idle_per_s / self.person_per_s

    @property
    def process_ratio(self) -> float:
        return self._per_s(self.idle, process=True) / self._per_s(self.person, process=True)


@dataclass(frozen=True)
class LatencyResult:
    broker: str  # host:port and whose it was, or why there was none
    person_on_s: list[float]  # first ground-truth frame with a person -> person ON received
    caption_s: list[float]  # keyframe grabbed -> caption received
    caption_delivery_s: list[float]  # caption done (the payload's grab time + latency) -> received
    not_measured: str = ""  # why, when there was no broker


@dataclass(frozen=True)
class Machine:
    system: str
    machine: str
    cpu: str
    cores: int
    python: str
    runtime: str
    threads: int
    models: str

    @classmethod
    def here(cls, runtime: str, threads: int, models: Path) -> Machine:
        import os

        return cls(
            platform.platform(terse=True),
            platform.machine(),
            cpu_model(),
            os.cpu_count() or 1,
            platform.python_version(),
            runtime,
            threads,
            str(models),
        )

    def describe(self) -> str:
        return (
            f"{self.cpu} ({self.machine}, {self.cores} cores), {self.system}, Python {self.python}, "
            f"{self.runtime} with {self.threads} thread(s)"
        )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (x86 ``model name``, a Pi's ``Model``), else platform's guess."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    found: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        found.setdefault(key.strip(), value.strip())
    return found.get("model name") or found.get("Model") or platform.processor() or platform.machine()


@dataclass(frozen=True)
class BenchReport:
    quick: bool
    started: str  # ISO 8601 UTC
    seconds: float
    machine: Machine
    invoke: list[InvokeTiming]
    pipeline: PipelineResult | None  # on the recorded frames
    pipeline_sized: PipelineResult | None  # on the same frames already at the model's letterbox size
    decode: DecodeResult | None
    caption: list[CaptionResult]
    memory: MemoryResult
    cpu: CpuResult
    latency: LatencyResult
    figures: list[Figure]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = 1
        data["figures"] = [f.to_json() for f in self.figures]
        data["cpu"] |= {
            "idle_per_s": self.cpu.idle_per_s,
            "person_per_s": self.cpu.person_per_s,
            "ratio": self.cpu.ratio,
            "process_ratio": self.cpu.process_ratio,
        }
        measured = [f for f in self.figures if f.target is not None]
        data["targets"] = {
            "met": sum(f.met is True for f in measured),
            "unmet": sum(f.met is False for f in measured),
            "not_measured": sum(f.met is None for f in measured),
        }
        return data

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = folder / "bench.json", folder / "bench.md"
        json_path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        markdown_path.write_text(markdown(self))
        return json_path, markdown_path


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "not measured"
    value = figure.value
    digits = 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
    return f"{value:.{digits}f}{' ' + figure.unit if figure.unit else ''}"


def markdown(report: BenchReport) -> str:
    """The figures as one Markdown table, with the machine and how the run went."""
    mode = "quick run (every phase shortened: not for quoting)" if report.quick else "full run"
    lines = [
        "# Benchmark",
        "",
        f"Machine: {report.machine.describe()}. Models: `{report.machine.models}`.",
        f"{mode}, started {report.started}, {report.seconds:.0f} s.",
        "",
        "| Figure | Measured | Target | Met |",
        "| --- | --- | --- | --- |",
    ]
    for figure in report.figures:
        target = f"{figure.target} {figure.unit}".rstrip() if figure.target is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[figure.met]
        if figure.target is not None and figure.value is None:
            met = "not measured"
        lines.append(f"| {figure.label} | {_value(figure)} | {target} | {met} |")
    notes = [f"- {figure.label}: {figure.note}" for figure in report.figures if figure.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"
