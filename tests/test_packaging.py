"""The installed distribution carries what the design card puts on the device, and no more."""

from importlib import metadata

from packaging.requirements import Requirement


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
