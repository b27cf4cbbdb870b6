"""The benchmark's child process: the real service, or just the models, in a process of its own, measuring itself.

    python -m appliance.bench.probe SPEC.json RESULT.json

A process of its own keeps the figures clean: its RSS is the appliance's, not the benchmark's
frames and models, and its CPU time is the service's alone. ``service`` runs
:class:`appliance.service.Service` as ``appliance run`` does, hears READY on a notify socket of its
own (systemd's protocol), lets it warm up, then measures a window: the process's CPU time, the CPU
time of the grabber threads (here they draw the synthetic world, which a camera does on a device),
and its RSS every few seconds. Then it stops the service. ``models`` loads every model slot, runs
each model once, and reports the peak RSS.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.logs import setup_logging

READY_WAIT = 60.0  # seconds for models and cameras to come up


@dataclass(frozen=True)
class ProbeSpec:
    mode: str  # service or models
    env_file: str
    warmup: float = 0.0  # seconds after READY before the window opens
    window: float = 0.0  # seconds measured
    sample_every: float = 1.0  # seconds between RSS samples


@dataclass
class ProbeResult:
    status: int = 0
    error: str = ""
    ready_after: float | None = None  # seconds from start to READY
    window_start: float | None = None  # wall clock (epoch seconds) when the window opened
    wall: float = 0.0  # seconds the window lasted
    process_cpu: float = 0.0  # CPU seconds of the whole process in the window
    camera_cpu: float = 0.0  # of which the grabber threads'
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the window, RSS MB)
    peak_rss_mb: float = 0.0


def _status_mb(field: str) -> float | None:
    """A size line of /proc/self/status (Linux) in MB, or None where there is none."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024.0 if found else None


def rss_mb() -> float:
    """The resident set size now."""
    now = _status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """The peak resident set size of this program.

    VmHWM where there is one: getrusage's maximum survives exec on Linux, so a child started by a
    big parent would report the parent's size at the fork.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    most = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return most / 1024.0 if sys.platform != "darwin" else most / 1024.0 / 1024.0  # kB on Linux, bytes on macOS


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds ``thread`` has used, 0 once it has ended."""
    if thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:
        return 0.0


def camera_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("grabber-")]


class _Window:
    """Waits for READY, then measures one window and stops the service."""

    def __init__(self, spec: ProbeSpec, notify: socket.socket, stop: threading.Event, result: ProbeResult) -> None:
        self.spec, self.notify, self.stop, self.result = spec, notify, stop, result
        self.started = time.monotonic()

    def run(self) -> None:
        try:
            if self._wait_ready():
                self._measure()
        finally:
            self.stop.set()

    def _wait_ready(self) -> bool:
        deadline = self.started + READY_WAIT
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                message = self.notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                self.result.ready_after = time.monotonic() - self.started
                return not self.stop.wait(self.spec.warmup)
        if not self.stop.is_set():
            self.result.error = f"the service was not READY after {READY_WAIT:g} s"
        return False

    def _measure(self) -> None:
        spec, result = self.spec, self.result
        cameras = camera_threads()
        camera_start = sum(thread_cpu(t) for t in cameras)
        cpu_start, start = time.process_time(), time.monotonic()
        result.window_start = time.time()
        while (elapsed := time.monotonic() - start) < spec.window:
            result.samples.append((round(elapsed, 2), round(rss_mb(), 2)))
            if self.stop.wait(min(spec.sample_every, spec.window - elapsed)):
                break
        # Read before the service stops: the grabber threads end with it.
        result.camera_cpu = sum(thread_cpu(t) for t in cameras) - camera_start
        result.process_cpu = time.process_time() - cpu_start
        result.wall = time.monotonic() - start
        result.samples.append((round(result.wall, 2), round(rss_mb(), 2)))


def run_service(spec: ProbeSpec, result: ProbeResult) -> None:
    from appliance.service import Service

    config = load_config({}, Path(spec.env_file))
    setup_logging(config.log_level)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as folder:
        path = str(Path(folder) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(path)
            notify.settimeout(0.2)
            environ = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "WATCHDOG_"))}
            window = _Window(spec, notify, stop, result)
            measurer = threading.Thread(target=window.run, name="bench-window", daemon=True)
            measurer.start()
            try:
                result.status = Service(config, environ | {"NOTIFY_SOCKET": path}).run(stop)
            finally:
                stop.set()
                measurer.join(10.0)


def run_models(spec: ProbeSpec, _result: ProbeResult) -> None:
    from appliance.check import run_check

    config = load_config({}, Path(spec.env_file))
    setup_logging(config.log_level)
    with open(os.devnull, "w") as nowhere:
        run_check(config, nowhere, repeats=1)


def main(argv: list[str]) -> int:
    spec_path, result_path = (Path(a) for a in argv)
    spec = ProbeSpec(**json.loads(spec_path.read_text()))
    result = ProbeResult()
    try:
        (run_service if spec.mode == "service" else run_models)(spec, result)
    except ApplianceError as error:
        result.status, result.error = error.exit_status, str(error)
    result.peak_rss_mb = round(peak_rss_mb(), 2)
    result_path.write_text(json.dumps(asdict(result)))
    return 0 if result.status == 0 and not result.error else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
