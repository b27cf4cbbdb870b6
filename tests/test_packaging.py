"""The installed distribution carries what the design card puts on the device, and no more."""

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    return [Requirement(line) for line in metadata.requires("appliance") or []]


def test_the_default_install_has_the_on_device_dependencies() -> None:
    default = {r.name.lower() for r in _requirements() if r.marker is None}
    assert {"numpy", "opencv-python-headless", "paho-mqtt", "ai-edge-litert"} <= default


def test_the_heavy_packages_are_only_in_the_host_side_extras() -> None:
    """TensorFlow and ONNX are the toolchain's (extra ``convert``: `yolo` reads, rewrites and runs an
    Ultralytics export); torch serves only the tests (extra ``dev``)."""
    where = {
        "tensorflow": "convert",
        "tensorflow-cpu": "convert",
        "onnx": "convert",
        "onnxruntime": "convert",
        "torch": "dev",
    }
    seen = set()
    for requirement in _requirements():
        name = requirement.name.lower()
        assert name != "onnx2tf", "onnx2tf pins its own TensorFlow: it runs in an environment of its own"
        if name in where:
            assert requirement.marker is not None, f"{name} would be installed on the device"
            assert f'extra == "{where[name]}"' in str(requirement.marker), f"{name}: {requirement.marker}"
            seen.add(name)
    assert {"tensorflow-cpu", "tensorflow", "torch"} <= seen


def test_the_wheel_builds_without_a_warning_and_carries_the_scenarios_and_models(tmp_path: Path) -> None:
    """A build of the tracked files, as the image build makes it; setuptools used to print 40 lines about
    ``appliance.sim.scenarios`` being data in a folder it did not count as a package."""
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    output = build.stdout + build.stderr
    warnings = [line for line in output.splitlines() if "warning" in line.lower() and "Location 'file:" not in line]
    assert warnings == []
    (wheel,) = tmp_path.glob("appliance-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"appliance/sim/scenarios/{p.name}" for p in (ROOT / "appliance/sim/scenarios").glob("*.json")}
    assert len(shipped) >= 6
    assert shipped <= names
    assert any(name.endswith("data/share/appliance/models/manifest.json") for name in names)
    assert not any("__pycache__" in name for name in names)
