"""The installed distribution carries what the design card puts on the device, and no more."""

from importlib import metadata

from packaging.requirements import Requirement


def _requirements() -> list[Requirement]:
    return [Requirement(line) for line in metadata.requires("appliance") or []]


def test_the_default_install_has_the_on_device_dependencies() -> None:
    default = {r.name.lower() for r in _requirements() if r.marker is None}
    assert {"numpy", "opencv-python-headless", "paho-mqtt", "ai-edge-litert"} <= default


def test_the_heavy_toolchain_is_only_in_the_convert_extra() -> None:
    heavy = {"tensorflow", "tensorflow-cpu", "torch", "onnx2tf"}
    for requirement in _requirements():
        if requirement.name.lower() in heavy:
            assert requirement.marker is not None
            assert 'extra == "convert"' in str(requirement.marker)
