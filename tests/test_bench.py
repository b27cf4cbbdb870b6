"""``appliance bench --quick``: it runs end to end and writes well-formed results.

The quick run through the real command line, on the committed reference models and a real
broker (the test's Mosquitto, given as the configured broker). Only the shape of the results is
checked here: how fast anything is belongs to the benchmark's report, not to a test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.bench.broker import Subscriber, open_broker
from appliance.bench.results import Comparison, Spread, Target
from appliance.config import load_config
from tests.broker import Broker
from tests.conftest import ROOT
from tests.parts import need

TARGETS: dict[str, tuple[Comparison, float]] = {
    "pipeline.rate_ratio": (">=", 0.95),
    "pipeline.sized_rate_ratio": (">=", 0.95),
    "decode.median": ("<=", 1.0),
    "memory.models_loaded": ("<=", 250.0),
    "memory.run_peak": ("<=", 250.0),
    "memory.growth": ("<", 5.0),
    "cpu.ratio": ("<=", 0.15),
}
SECTIONS = {
    "machine",
    "invoke",
    "pipeline",
    "pipeline_sized",
    "decode",
    "caption",
    "memory",
    "cpu",
    "latency",
    "figures",
    "targets",
}


@dataclass(frozen=True)
class QuickRun:
    status: int
    stdout: str
    stderr: str
    out: Path

    @property
    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.out / "bench.json").read_text())
        return loaded


@pytest.fixture(scope="module")
def quick(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    work = tmp_path_factory.mktemp("bench")
    env_file = work / "appliance.env"
    env_file.write_text(f"APPLIANCE_MQTT_HOST=127.0.0.1\nAPPLIANCE_MQTT_PORT={broker.port}\n")
    out = work / "out"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    process = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--quick", "--out", str(out), "--env-file", str(env_file)],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return QuickRun(process.returncode, process.stdout, process.stderr, out)


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_the_quick_benchmark_runs_and_writes_both_files(quick: QuickRun) -> None:
    assert quick.status == 0, quick.stderr[-3000:]
    assert "Traceback" not in quick.stderr
    assert (quick.out / "bench.json").is_file()
    assert (quick.out / "bench.md").is_file()
    assert "| Figure | Measured | Target | Met |" in quick.stdout


def test_every_section_is_there_and_names_the_machine(quick: QuickRun) -> None:
    data = quick.data
    assert data["version"] == 1
    assert data["quick"] is True
    assert set(data) >= SECTIONS
    machine = data["machine"]
    assert machine["cores"] >= 1
    assert machine["threads"] >= 1
    assert machine["runtime"]
    assert Path(machine["models"]) == ROOT / "models"


def test_model_timings_are_positive_for_every_model_of_every_slot(quick: QuickRun) -> None:
    data = quick.data
    roles = {(t["slot"], t["role"]) for t in data["invoke"]}
    assert roles == {("detector", "model"), ("classifier", "model"), ("captioner", "encoder"), ("captioner", "decoder")}
    for timing in data["invoke"]:
        assert positive(timing["ms"]["median"])
        assert timing["ms"]["p90"] >= timing["ms"]["median"]
    for pipeline in (data["pipeline"], data["pipeline_sized"]):
        for key in ("bare_fps", "pipeline_fps", "rate_ratio"):
            assert positive(pipeline[key]), key
        assert finite(pipeline["overhead_ms"])
    assert data["pipeline"]["frame_size"] == [640, 480]  # the recorded frames, as the synthetic cameras give them
    assert data["pipeline_sized"]["frame_size"][0] <= data["pipeline_sized"]["input_size"][0]
    assert data["decode"]["anchors"] > 0
    assert positive(data["decode"]["ms"]["median"])
    # greedy on the frame alone, and as configured: beam 3 over the frame and its mirror image
    assert [(c["beam_width"], c["mirror"]) for c in data["caption"]] == [(1, False), (3, True)]
    for caption in data["caption"]:
        assert positive(caption["ms"]["median"])
        assert positive(caption["tokens"])


def test_memory_cpu_and_latency_come_from_the_running_service(quick: QuickRun) -> None:
    data = quick.data
    memory = data["memory"]
    assert positive(memory["models_loaded_mb"])
    assert positive(memory["run_peak_mb"])
    assert finite(memory["growth_mb"])
    assert memory["samples"]
    cpu = data["cpu"]
    for scene in cpu["idle"] + cpu["person"]:
        assert positive(scene["wall_s"])
        assert finite(scene["process_cpu_s"])
        assert 0 <= scene["camera_cpu_s"] <= scene["process_cpu_s"]
    assert positive(cpu["person_per_s"])
    assert finite(cpu["ratio"])
    latency = data["latency"]
    assert latency["not_measured"] == ""
    assert "configured broker at 127.0.0.1" in latency["broker"]
    assert latency["person_on_s"]
    assert latency["caption_s"]
    assert all(finite(v) for v in latency["person_on_s"] + latency["caption_s"] + latency["caption_delivery_s"])


def test_every_target_is_recorded_with_its_bound_and_whether_it_was_met(quick: QuickRun) -> None:
    figures = {f["key"]: f for f in quick.data["figures"]}
    for key, (comparison, bound) in TARGETS.items():
        figure = figures[key]
        assert figure["target"] == {"comparison": comparison, "bound": bound}, key
        assert finite(figure["value"]), key
        assert figure["met"] is Target(comparison, bound).met(figure["value"]), key
    for figure in figures.values():
        assert figure["label"]
        assert figure["value"] is None or finite(figure["value"])
        assert (figure["met"] is None) == (figure["target"] is None or figure["value"] is None)
    counts = quick.data["targets"]
    assert counts["met"] + counts["unmet"] + counts["not_measured"] == len(TARGETS)


def test_the_markdown_table_has_a_row_per_figure(quick: QuickRun) -> None:
    table = (quick.out / "bench.md").read_text()
    assert "| Figure | Measured | Target | Met |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| Figure", "| ---"))]
    assert len(rows) == len(quick.data["figures"])
    assert "quick run" in table
    for figure in quick.data["figures"]:
        assert f"| {figure['label']} |" in table


def test_without_a_configured_broker_a_private_mosquitto_stands_in_and_is_stopped(tmp_path: Path) -> None:
    need("mosquitto")
    config = load_config({"APPLIANCE_MQTT_HOST": "127.0.0.1", "APPLIANCE_MQTT_PORT": "1"})  # nothing listens on 1
    with open_broker(config, tmp_path) as broker:
        assert broker.settings is not None, broker.why
        assert broker.whose == "private"
        subscriber = Subscriber(broker.settings, "bench-test")
        assert subscriber.connect()
        subscriber.close()
        settings = broker.settings
    assert not Subscriber(settings, "bench-test").connect()  # stopped with the block


def test_spreads_are_numpy_percentiles_and_targets_compare_as_written() -> None:
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]
    spread = Spread.of(samples)
    assert spread.median == pytest.approx(np.percentile(samples, 50))
    assert spread.p90 == pytest.approx(np.percentile(samples, 90))
    assert spread.runs == len(samples)
    assert Target("<=", 1.0).met(1.0)
    assert not Target("<", 5.0).met(5.0)
    assert Target(">=", 0.95).met(0.95)
