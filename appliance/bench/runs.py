"""The service phases: the real service in child processes, on the synthetic scenes, through a real broker.

Each run is ``python -m appliance.bench.probe`` on an env file made from the configuration (its
models, threads, detection and caption settings) with the bench's cameras, data folder, device id
and broker. Its log goes to ``DIR/logs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.bench import scenes
from appliance.bench.broker import Broker, Received, Subscriber
from appliance.bench.probe import ProbeResult, ProbeSpec
from appliance.bench.results import LatencyResult, MemoryResult, SceneCpu
from appliance.config import Config, as_env
from appliance.errors import ApplianceError
from appliance.scheduler import MOTION_LINGER

CAMERAS = ("cam0", "cam1")
EXTRA_WAIT = 120.0  # seconds a child may take beyond its window: start-up, models, stopping


@dataclass(frozen=True)
class Plan:
    warmup: float  # seconds after READY before measuring
    cpu_window: float  # seconds per scene and round
    cpu_rounds: int  # still, person, still, person ...
    run_seconds: float  # the synthetic run (RSS growth, MQTT latencies)
    run_warmup: float  # seconds of the synthetic run before the RSS baseline
    sample_every: float  # seconds between RSS samples
    stats_every: float  # the service's stats period (detections per second come from it)


# Warm-up outlasts the motion linger after a camera's first frame, which counts as motion.
QUICK = Plan(
    warmup=MOTION_LINGER + 1.0,
    cpu_window=3.0,
    cpu_rounds=1,
    run_seconds=12.0,
    run_warmup=2.0,
    sample_every=0.5,
    stats_every=1,
)
FULL = Plan(
    warmup=MOTION_LINGER + 3.0,
    cpu_window=30.0,
    cpu_rounds=2,
    run_seconds=600.0,
    run_warmup=60.0,
    sample_every=5,
    stats_every=5,
)


class ServiceRuns:
    """Runs the service's phases for one benchmark; ``work`` is a private scratch folder."""

    def __init__(self, config: Config, broker: Broker, plan: Plan, work: Path, logs: Path) -> None:
        self.config, self.broker, self.plan = config, broker, plan
        self.work, self.logs = work, logs
        self.device = f"bench{os.getpid()}"  # each run adds its name: its messages have a topic tree of their own
        logs.mkdir(parents=True, exist_ok=True)

    def root(self, name: str) -> str:
        return f"{self.config.mqtt_prefix}/{self.device}-{name}"

    @contextlib.contextmanager
    def subscriber(self, name: str) -> Iterator[Subscriber | None]:
        """A subscriber to run ``name``'s topics while it runs, or None without a broker."""
        if self.broker.settings is None:
            yield None
            return
        subscriber = Subscriber(self.broker.settings, self.root(name))
        if not subscriber.connect():
            raise ApplianceError(f"bench: the broker at {self.broker.settings.address} stopped answering")
        try:
            yield subscriber
        finally:
            if self.broker.whose == "configured":  # a private broker goes away with what it holds
                subscriber.clear_retained()
            subscriber.close()

    def _env(self, name: str, scene: str, record: bool) -> Path:
        config = self.config
        values = dict(line.split("=", 1) for line in as_env(config).splitlines())
        camera_0, camera_1 = scenes.camera_uris(scenes.write_scene(scene, self.work))
        values |= {
            "APPLIANCE_CAMERA_0": camera_0,
            "APPLIANCE_CAMERA_1": camera_1,
            "APPLIANCE_CAMERA_0_NAME": CAMERAS[0],
            "APPLIANCE_CAMERA_1_NAME": CAMERAS[1],
            "APPLIANCE_RECORD": "1" if record else "0",
            "APPLIANCE_DATA_DIR": str(self.work / f"data-{name}"),
            "APPLIANCE_RECORD_DIR": "",
            "APPLIANCE_DEVICE_ID": f"{self.device}-{name}",
            "APPLIANCE_MQTT_CLIENT_ID": "",
            "APPLIANCE_HA_DISCOVERY": "0",
            "APPLIANCE_STATS_EVERY": str(self.plan.stats_every),
            # A visit must end before the next begins: the scene leaves the room empty for 11 s.
            "APPLIANCE_PRESENCE_HOLD": str(min(config.presence_hold, 4.0)),
            "APPLIANCE_POSTROLL": str(min(config.postroll, 4.0)),
        }
        settings = self.broker.settings
        if self.broker.whose == "private" and settings is not None:
            values |= {"APPLIANCE_MQTT_HOST": settings.host, "APPLIANCE_MQTT_PORT": str(settings.port)}
            values |= dict.fromkeys(("APPLIANCE_MQTT_USER", "APPLIANCE_MQTT_PASSWORD", "APPLIANCE_MQTT_CA_FILE"), "")
            values |= {"APPLIANCE_MQTT_TLS": "0", "APPLIANCE_MQTT_CERT_FILE": "", "APPLIANCE_MQTT_KEY_FILE": ""}
        path = self.work / f"{name}.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        return path

    def probe(self, name: str, spec: ProbeSpec) -> ProbeResult:
        """Run one child; raises ApplianceError naming its log when it fails."""
        spec_path, result_path = self.work / f"{name}.spec.json", self.work / f"{name}.result.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        log = self.logs / f"{name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "NOTIFY_", "WATCHDOG_"))}
        timeout = spec.warmup + spec.window + EXTRA_WAIT
        with log.open("w") as output:
            command = [sys.executable, "-m", "appliance.bench.probe", str(spec_path), str(result_path)]
            try:
                subprocess.run(
                    command, stdout=output, stderr=subprocess.STDOUT, env=environ, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise ApplianceError(f"bench: the {name} run took over {timeout:.0f} s; see {log}") from None
        if not result_path.exists():
            raise ApplianceError(f"bench: the {name} run wrote no result; see {log}")
        result = ProbeResult(**json.loads(result_path.read_text()))
        result.samples = [(t, mb) for t, mb in result.samples]
        if result.error or result.status != 0:
            raise ApplianceError(
                f"bench: the {name} run failed ({result.error or f'status {result.status}'}); see {log}"
            )
        return result

    def models_loaded_mb(self) -> float:
        result = self.probe("models", ProbeSpec("models", str(self._env("models", "still", record=False))))
        return result.peak_rss_mb

    def scene_cpu(self, scene: str, round_number: int) -> SceneCpu:
        plan = self.plan
        name = f"cpu-{scene}-{round_number}"
        env = self._env(name, scene, record=False)
        with self.subscriber(name) as subscriber:
            result = self.probe(name, ProbeSpec("service", str(env), plan.warmup, plan.cpu_window, plan.sample_every))
            rate = None
            if subscriber is not None and result.window_start is not None:
                rate = _detection_rate(subscriber.on("stats"), result.window_start, result.wall, plan.stats_every)
        return SceneCpu(scene, result.wall, result.process_cpu, result.camera_cpu, rate)

    def synthetic_run(self, models_loaded_mb: float) -> tuple[MemoryResult, LatencyResult]:
        """Visits over and over with recording on: RSS over the run, and the MQTT latencies of every visit."""
        plan = self.plan
        env = self._env("run", "visit", record=True)
        latency = LatencyResult(self.broker.describe(), [], [], [], f"no broker: {self.broker.why}")
        events = None
        with self.subscriber("run") as subscriber:
            result = self.probe("run", ProbeSpec("service", str(env), 0.0, plan.run_seconds, plan.sample_every))
            if subscriber is not None:
                latency = latencies(subscriber, self.broker)
                events = sum(
                    json.loads(m.payload)["phase"] == "start" for c in CAMERAS for m in subscriber.on(f"{c}/event")
                )
        samples = result.samples
        warm = [mb for t, mb in samples if plan.run_warmup <= t < plan.run_warmup + 6 * plan.sample_every]
        last = [mb for t, mb in samples if t >= result.wall - 6 * plan.sample_every]
        start_mb = statistics.median(warm) if warm else None
        end_mb = statistics.median(last) if last else None
        memory = MemoryResult(
            models_loaded_mb=models_loaded_mb,
            run_seconds=result.wall,
            run_peak_mb=result.peak_rss_mb,
            run_start_mb=start_mb,
            run_end_mb=end_mb,
            growth_mb=None if start_mb is None or end_mb is None else end_mb - start_mb,
            samples=samples,
            events=events,
        )
        return memory, latency


def _detection_rate(messages: list[Received], start: float, wall: float, period: float) -> float | None:
    """Mean detections per second over the stats periods that lie wholly within the window."""
    rates = []
    for message in messages:
        stats = json.loads(message.payload)
        if start <= float(stats["ts"]) - period and float(stats["ts"]) <= start + wall:
            rates.append(float(stats["detections_per_s"]))
    return statistics.fmean(rates) if rates else None


def latencies(subscriber: Subscriber, broker: Broker) -> LatencyResult:
    """Person ON after the first ground-truth frame with a person, per visit and camera; caption after its keyframe.

    A camera's first frame is the scene's frame 0 (its state turns ``ok`` with it), and the scene
    loops: visit ``k`` starts ``k`` scene lengths later.
    """
    scenario = scenes.scene("visit")
    person_on: list[float] = []
    for view, camera in enumerate(CAMERAS):
        first = scenes.first_person_frame(scenario, view)
        ok = [m for m in subscriber.on(f"{camera}/state") if json.loads(m.payload).get("state") == "ok"]
        if first is None or not ok:
            continue
        zero = float(json.loads(ok[0].payload)["ts"])  # wall time of the camera's frame 0
        for message in subscriber.on(f"{camera}/person"):
            if message.payload != "ON":
                continue
            # the nearest visit: a person may be found a frame before the truth counts them (a negative latency)
            visit = round((message.at - zero - first / scenario.fps) / scenario.duration)
            appeared = zero + visit * scenario.duration + first / scenario.fps
            person_on.append(message.at - appeared)
    captions = [json.loads(m.payload) | {"at": m.at} for c in CAMERAS for m in subscriber.on(f"{c}/caption")]
    return LatencyResult(
        broker.describe(),
        person_on,
        [c["at"] - float(c["ts"]) for c in captions],
        [c["at"] - float(c["ts"]) - float(c["latency"]) for c in captions],
    )
