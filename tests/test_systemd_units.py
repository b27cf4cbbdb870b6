"""The unit files in systemd/: systemd's own checks, the hardening score, and what the design asks of them.

``systemd-analyze verify`` needs the programs a unit starts to exist, so each unit is checked in a
stand-in root holding the host's system units, the units under test and an executable stub at
every ``ExecStart=`` path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.parts import need

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
HOST_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 3.0


@pytest.fixture(autouse=True)
def _systemd_analyze() -> None:
    need("systemd")


def directives(unit: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> its values in order (a unit may repeat a key)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def one(unit: Path, key: str) -> str:
    values = directives(unit)[key]
    assert len(values) == 1, f"{unit.name}: {key} is set {len(values)} times"
    return values[0]


@pytest.fixture(scope="module")
def analyze_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, target)
        for command in directives(unit).get("Service.ExecStart", []):
            program = root / command.split()[0].lstrip("-@:+!").lstrip("/")
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
    return root


def test_there_are_the_appliance_and_its_setup_unit() -> None:
    assert {u.name for u in UNITS} == {"appliance.service", "appliance-setup.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_passes(unit: Path, analyze_root: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={analyze_root}", unit.name], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


def test_the_appliance_exposure_is_at_most_3(
    analyze_root: Path, record_property: Callable[[str, object], None]
) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={analyze_root}", "appliance.service"],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for appliance\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    record_property("exposure", exposure)
    print(f"systemd-analyze security: appliance.service exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout


def test_the_appliance_unit_is_a_watched_notify_service_that_restarts_within_limits() -> None:
    unit = ROOT / "systemd/appliance.service"
    assert one(unit, "Service.Type") == "notify"
    assert one(unit, "Service.ExecStart") == "/opt/appliance/bin/appliance run"
    assert one(unit, "Service.WatchdogSec")
    assert one(unit, "Service.Restart") == "on-failure"
    assert one(unit, "Unit.StartLimitBurst")
    assert one(unit, "Unit.StartLimitIntervalSec")
    # a bad setting (2) or model (3) is not fixed by restarting
    assert one(unit, "Service.RestartPreventExitStatus").split() == ["2", "3"]


def test_the_appliance_reads_the_boot_partition_last_and_keeps_its_data_in_a_state_directory() -> None:
    unit = ROOT / "systemd/appliance.service"
    files = directives(unit)["Service.EnvironmentFile"]
    # the user's file comes last, so its settings win; it must exist (no "-")
    assert files[-1] == "/boot/firmware/appliance.env"
    assert "/boot/firmware" in one(unit, "Unit.RequiresMountsFor").split()
    assert one(unit, "Service.StateDirectory") == "appliance"


def test_the_appliance_runs_unprivileged_with_cameras_only() -> None:
    unit = ROOT / "systemd/appliance.service"
    assert one(unit, "Service.User") == "appliance"
    assert one(unit, "Service.DevicePolicy") == "closed"
    allowed = {value.split()[0] for value in directives(unit)["Service.DeviceAllow"]}
    assert allowed == {"char-video4linux", "char-media", "char-dma_heap"}
    assert one(unit, "Service.ProtectSystem") == "strict"
    assert one(unit, "Service.CapabilityBoundingSet") == ""
    assert one(unit, "Service.MemoryMax")
    families = set(one(unit, "Service.RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_setup_runs_before_what_reads_its_files() -> None:
    setup = ROOT / "systemd/appliance-setup.service"
    assert one(setup, "Service.Type") == "oneshot"
    before = set(one(setup, "Unit.Before").split())
    assert {"mosquitto.service", "appliance.service", "network-pre.target"} <= before
    appliance = ROOT / "systemd/appliance.service"
    assert "appliance-setup.service" in one(appliance, "Unit.After").split()
    assert "/run/appliance-setup/mqtt.env" in directives(appliance)["Service.EnvironmentFile"][0]
    assert one(setup, "Service.RuntimeDirectory") == "appliance-setup"
    dropin = ROOT / "image-build/rootfs/etc/systemd/system/mosquitto.service.d/appliance.conf"
    assert "appliance-setup.service" in one(dropin, "Unit.After").split()
