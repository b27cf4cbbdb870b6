"""image-build/build on a stand-in base image: what the flashed card would hold, checked from the image file.

The stand-in is Debian bookworm arm64 in Raspberry Pi OS's partition layout (image-build/standin-base),
so the Raspberry Pi archive's packages (picamera2) are skipped with a warning. The installed
appliance runs under qemu-user: ``appliance check`` loads and runs every model (int8 included, in
a chroot without /sys: see image-build/README.md), so only its timings are meaningless.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config import Config, as_env, parse_config, read_env_file
from tests.image.conftest import IMAGE_BUILD, ROOT
from tests.image.imagekit import Built, disk_id, fat_file, in_image, partitions, run

pytestmark = [pytest.mark.image, pytest.mark.slow]

MiB = 1 << 20


def test_the_build_reports_what_it_left_out_on_a_stand_in_and_nothing_else(built: Built) -> None:
    warnings = [line for line in built.log.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, built.log
    assert "the base image has no Raspberry Pi archive" in warnings[0]
    assert "python3-picamera2 will be left out" in warnings[0]


def test_the_partitions_keep_the_base_layout_and_the_root_is_shrunk(built: Built) -> None:
    base, image = partitions(built.base), partitions(built.image)
    assert [p.type for p in image] == ["0xc", "0x83"]
    assert image[0] == base[0]
    assert image[1].start == base[1].start
    assert disk_id(built.image) == disk_id(built.base)  # the fstab and cmdline.txt name partitions by it
    assert built.image.stat().st_size == (image[1].start + image[1].sectors) * 512
    assert fat_file(built.image, "cmdline.txt") == fat_file(built.base, "cmdline.txt")


def test_the_boot_partition_holds_the_two_env_files(built: Built, tmp_path: Path) -> None:
    env = fat_file(built.image, "appliance.env")
    generated = subprocess.run(
        [sys.executable, str(IMAGE_BUILD / "appliance_env.py")], capture_output=True, check=True
    ).stdout
    assert env == generated
    (tmp_path / "appliance.env").write_bytes(env)
    assert parse_config(read_env_file(tmp_path / "appliance.env")) == Config()
    assert fat_file(built.image, "appliance-device.env") == (IMAGE_BUILD / "boot/appliance-device.env").read_bytes()


def test_units_and_configuration_are_installed_as_in_the_checkout(built: Built) -> None:
    same = {
        "etc/systemd/system/appliance.service": ROOT / "systemd/appliance.service",
        "etc/systemd/system/appliance-setup.service": ROOT / "systemd/appliance-setup.service",
        "usr/local/sbin/appliance-setup": IMAGE_BUILD / "appliance_setup.py",
    }
    overlay = IMAGE_BUILD / "rootfs"
    same |= {str(f.relative_to(overlay)): f for f in overlay.rglob("*") if f.is_file()}
    for inside, source in same.items():
        assert (built.root / inside).read_bytes() == source.read_bytes(), inside
    assert os.access(built.root / "usr/local/sbin/appliance-setup", os.X_OK)
    assert os.readlink(built.root / "usr/local/bin/appliance") == "/opt/appliance/bin/appliance"


def test_the_units_are_enabled(built: Built) -> None:
    for unit in ("appliance.service", "appliance-setup.service", "mosquitto.service"):
        state = subprocess.run(
            ["systemctl", f"--root={built.root}", "is-enabled", unit], capture_output=True, text=True, check=False
        )
        assert state.stdout.strip() == "enabled", unit


def test_the_units_verify_against_the_image(built: Built) -> None:
    run("systemd-analyze", "verify", f"--root={built.root}", "appliance.service", "appliance-setup.service")


def test_the_os_is_set_up_for_the_appliance(built: Built) -> None:
    etc = built.root / "etc"
    passwd = {line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()}
    assert passwd["appliance"][6] == "/usr/sbin/nologin"
    assert int(passwd["appliance"][2]) < 1000  # a system user
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (etc / "group").read_text().splitlines()}
    assert "appliance" in groups["video"]
    assert (etc / "hostname").read_text() == "appliance\n"
    assert "127.0.1.1\tappliance" in (etc / "hosts").read_text().splitlines()
    fstab = [line.split() for line in (etc / "fstab").read_text().splitlines() if "/boot/firmware" in line]
    assert "fmask=0077" in fstab[0][3].split(",")
    assert "log_dest syslog" in (etc / "mosquitto/mosquitto.conf").read_text().splitlines()
    assert (etc / "mosquitto/appliance.passwd").exists()
    pyvenv = (built.root / "opt/appliance/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in pyvenv


def test_the_build_leaves_nothing_of_its_own_behind(built: Built) -> None:
    for leftover in (
        "usr/sbin/policy-rc.d",
        "tmp/appliance-build",
        "etc/resolv.conf.appliance-build",
        "root/.cache/pip",
    ):
        assert not (built.root / leftover).exists(), leftover
    assert not any((built.root / "var/lib/apt/lists").glob("*_Packages"))
    assert not any((built.root / "var/cache/apt/archives").glob("*.deb"))
    assert not any((built.root / "boot/firmware").iterdir())


def test_the_image_ships_the_real_detector_and_the_repositorys_other_models(built: Built) -> None:
    """By default the build fetches the YOLOv8s Normal/Fall weights and converts them at 416x320."""
    models = built.root / "opt/appliance/share/appliance/models"
    manifest = json.loads((models / "manifest.json").read_text())
    ours = json.loads((ROOT / "models/manifest.json").read_text())
    detector = manifest["slots"]["detector"]
    assert detector["command"].startswith("python -m tools.convert yolo ")
    assert "--size 416x320" in detector["command"]
    assert detector["params"]["person_classes"] == ["Normal", "Fall"]
    assert detector["params"]["fall_classes"] == ["Fall"]
    assert (models / "detector_labels.txt").read_text().split() == ["Normal", "Fall"]
    for slot in ("classifier", "captioner"):
        assert manifest["slots"][slot] == ours["slots"][slot]
    files = [
        entry
        for slot in manifest["slots"].values()
        for group in ("models", "files")
        for entry in slot.get(group, {}).values()
    ]
    assert len(files) >= 7
    for entry in files:
        assert hashlib.sha256((models / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], entry["file"]


@pytest.fixture(scope="module")
def boot_files_inside(built: Built) -> Callable[[str], str]:
    """Copies a boot partition file into the image's /boot/firmware (the FAT is not mounted here)."""

    def place(name: str) -> str:
        (built.root / "boot/firmware" / name).write_bytes(fat_file(built.image, name))
        return f"/boot/firmware/{name}"

    return place


def test_appliance_check_passes_under_emulation(built: Built, boot_files_inside: Callable[[str], str]) -> None:
    env = boot_files_inside("appliance.env")
    try:
        assert in_image(built, "appliance", "config", "--env-file", env) == as_env(Config())
        # the whole check, int8 inference included: it runs under qemu-user without /sys
        out = in_image(built, "appliance", "check", "--env-file", env, "--repeat", "1")
    finally:
        (built.root / env.lstrip("/")).unlink()
    assert "runtime: ai_edge_litert" in out
    assert "models: /opt/appliance/share/appliance/models" in out
    for model in ("detector.tflite", "classifier.tflite", "captioner_encoder.tflite", "captioner_decoder.tflite"):
        assert model in out
    assert "1x320x416x3" in out
    assert "person classes: Normal, Fall; fallen-person classes: Fall" in out
    assert out.rstrip().endswith("ok: the configuration is valid and every model loads and runs")


def test_the_venv_has_numpy_1_for_the_os_packages_and_the_camera_and_video_libraries(built: Built) -> None:
    imports = "import av, cv2, paho.mqtt, numpy; print(numpy.__version__)"
    # Raspberry Pi OS's compiled Python packages (picamera2's simplejpeg) are built for numpy 1.x.
    assert in_image(built, "/opt/appliance/bin/python", "-c", imports).startswith("1.")


def test_appliance_setup_runs_in_the_image(built: Built, boot_files_inside: Callable[[str], str]) -> None:
    placed = [boot_files_inside("appliance.env"), boot_files_inside("appliance-device.env")]
    try:
        in_image(built, "/usr/local/sbin/appliance-setup")
    finally:
        for path in placed:
            (built.root / path.lstrip("/")).unlink()
    users = (built.root / "etc/mosquitto/appliance.passwd").read_text()
    assert users.startswith("appliance:$7$")
    login = read_env_file(built.root / "run/appliance-setup/mqtt.env")  # read as systemd reads it
    assert login["APPLIANCE_MQTT_USER"] == "appliance"
    assert len(login["APPLIANCE_MQTT_PASSWORD"]) >= 24
    acl = (built.root / "etc/mosquitto/appliance.acl").read_text()
    assert "user appliance\n" in acl


def test_the_image_size(built: Built, record_property: Callable[[str, object], None]) -> None:
    flashed, compressed = built.image.stat().st_size, built.output.stat().st_size
    base = built.base.stat().st_size
    record_property("build_seconds", round(built.build_seconds))
    record_property("flashed_mib", flashed // MiB)
    record_property("compressed_mib", compressed // MiB)
    print(
        f"image: base {base // MiB} MiB, flashed {flashed // MiB} MiB, xz -1 {compressed // MiB} MiB, "
        f"built in {built.build_seconds:.0f} s"
    )
    # The venv and packages add a few hundred MB; the shrink keeps the root close to its contents.
    assert flashed < base + 1024 * MiB
    assert compressed < 600 * MiB
