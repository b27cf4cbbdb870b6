"""The built image boots under qemu-system-aarch64 and the appliance publishes to a broker on this machine.

Opt-in (``IMAGE_BOOT_TEST=1``): on top of the build it takes about five minutes more, mostly the
kernel's installation under qemu-user. The stand-in image has no kernel of its own (Raspberry Pi
OS's does not boot on QEMU's virt machine either), so a copy of the built image gets Debian's
arm64 kernel, a small initramfs and DHCP by systemd-networkd; everything else is the image as
built. The appliance runs under systemd with its units' hardening, on the synthetic world's
cameras, and reaches the broker only through a QEMU guest forward to 127.0.0.1 (restrict=on: no
other traffic leaves the guest).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import Broker, collect
from tests.image.imagekit import Built, disk_id, in_root, opened_root, partitions, run

MISSING = [tool for tool in ("qemu-system-aarch64", "socat") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.image,
    pytest.mark.slow,
    # decided before the build fixture runs, so that a skipped boot costs no build
    pytest.mark.skipif(
        os.environ.get("IMAGE_BOOT_TEST") != "1",
        reason="set IMAGE_BOOT_TEST=1 to boot the image under qemu-system-aarch64 (about 5 minutes more)",
    ),
    pytest.mark.skipif(bool(MISSING), reason=f"missing {', '.join(MISSING)} (apt-get install qemu-system-arm socat)"),
]

GUEST_BROKER = "10.0.2.100"  # inside the guest; QEMU forwards it to the test broker
BOOT_TIMEOUT = 900.0  # seconds from power-on to "online", under full emulation on a busy machine

APPLIANCE_ENV = f"""# boot test: the synthetic world's two cameras, the broker on the test machine
APPLIANCE_CAMERA_0=sim:shop-knife?view=0&loop=1
APPLIANCE_CAMERA_1=sim:shop-knife?view=1&loop=1
APPLIANCE_MQTT_HOST={GUEST_BROKER}
APPLIANCE_MQTT_PORT=1883
"""
DEVICE_ENV = "HOSTNAME=boot-test\nMQTT_PASSWORD=s3cret\n"
# Only what QEMU's virt machine needs to find the root: mkinitramfs copies each module it takes
# with a few processes, which costs seconds apiece under qemu-user.
INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\nvirtio_net\next4\n"
WIRED = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"


@dataclass(frozen=True)
class Bootable:
    image: Path
    kernel: Path
    initrd: Path
    disk_id: str


def _in_root(root: Path, *command: str) -> str:
    return in_root(root, *command, timeout=1200, environment=("DEBIAN_FRONTEND=noninteractive",))


def _add_kernel(root: Path, folder: Path) -> tuple[Path, Path]:
    """Debian's arm64 kernel with a small initramfs, and DHCP on the wired interface; returns the kernel and initrd."""
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    initramfs = root / "etc/initramfs-tools"
    (initramfs / "conf.d").mkdir(parents=True, exist_ok=True)
    (initramfs / "modules").write_text(INITRAMFS_MODULES)
    (initramfs / "conf.d/boot-test").write_text("MODULES=list\n")
    _in_root(root, "apt-get", "update")
    _in_root(root, "apt-get", "install", "-y", "--no-install-recommends", "linux-image-arm64")
    (root / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/network/20-wired.network").write_text(WIRED)
    _in_root(root, "systemctl", "enable", "systemd-networkd.service")
    policy.unlink()
    kernel, initrd = folder / "vmlinuz", folder / "initrd"
    shutil.copy(next((root / "boot").glob("vmlinuz-*")), kernel)
    shutil.copy(next((root / "boot").glob("initrd.img-*")), initrd)
    return kernel, initrd


@pytest.fixture(scope="module")
def bootable(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Bootable:
    folder = tmp_path_factory.mktemp("boot")
    image = folder / "boot.img"
    with image.open("wb") as stream:
        subprocess.run(["xz", "-dc", built.output], stdout=stream, check=True)
    # room for the kernel's modules
    run("truncate", "-s", "+1536M", image)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "-N", "2", image], input=b", +\n", check=True)
    with opened_root(image, folder / "root", grow=True) as root:
        kernel, initrd = _add_kernel(root, folder)
    boot = partitions(image)[0]
    for name, text in (("appliance.env", APPLIANCE_ENV), ("appliance-device.env", DEVICE_ENV)):
        (folder / name).write_text(text)
        subprocess.run(
            ["mcopy", "-o", "-i", f"{image}@@{boot.offset}", folder / name, "::"],
            check=True,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )
    return Bootable(image, kernel, initrd, disk_id(image).removeprefix("0x"))


@dataclass(frozen=True)
class Guest:
    console: Path  # the serial console's log
    started: float  # wall time of power-on


@pytest.fixture
def guest(bootable: Bootable, fresh_broker: Broker) -> Iterator[Guest]:
    """The image running under qemu-system-aarch64."""
    console = bootable.image.with_name("console.log")
    command = [
        "qemu-system-aarch64",
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-smp",
        "2",
        "-m",
        "2048",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-kernel",
        str(bootable.kernel),
        "-initrd",
        str(bootable.initrd),
        "-append",
        # the journal on the console: what the appliance logs ends up in the test's failure message
        f"root=PARTUUID={bootable.disk_id}-02 rootfstype=ext4 rw console=ttyAMA0 systemd.journald.forward_to_console=1",
        "-drive",
        f"file={bootable.image},format=raw,if=virtio",
        "-netdev",
        f"user,id=net,restrict=on,guestfwd=tcp:{GUEST_BROKER}:1883-cmd:socat - TCP:127.0.0.1:{fresh_broker.port}",
        "-device",
        "virtio-net-pci,netdev=net,romfile=",
    ]
    started = time.time()
    with bootable.image.with_name("qemu.log").open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Guest(console, started)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(30)


def test_the_image_boots_and_the_appliance_publishes(
    guest: Guest, fresh_broker: Broker, record_property: Callable[[str, object], None]
) -> None:
    with collect(fresh_broker, "appliance/#") as collector:
        try:
            collector.wait_for(
                lambda messages: any(m.topic.endswith("/caption") for m in messages), timeout=BOOT_TIMEOUT
            )
        except BaseException:
            print(guest.console.read_text(errors="replace")[-20000:])
            raise
        # the host name from appliance-device.env became the device id: appliance-setup ran first
        online = collector.on("appliance/boot-test/status")
        assert [m.payload for m in online][:1] == ["online"]
        states = collector.on("appliance/boot-test/cam0/state")
        assert states
        assert states[0].json()["state"] == "ok"
    console = guest.console.read_text(errors="replace")
    assert "Started appliance.service" in console
    assert "Watchdog timeout" not in console
    seconds = online[0].at - guest.started
    record_property("seconds_to_online", round(seconds))
    print(f"boot: online {seconds:.0f} s after power-on (qemu-system-aarch64, TCG)")
