"""The SD image test: a stand-in base image, the build run on it once, and its result opened for inspection.

Everything here needs root (debootstrap, loop devices, mounts, chroot), qemu-user-static with
binfmt_misc, the image tools and the network (Debian's mirror and PyPI); where any of that is
missing the tests are skipped with the reason, or fail when ``IMAGE_TEST_REQUIRED=1`` (CI).

``IMAGE_TEST_CACHE=DIR`` keeps the stand-in base image between runs while ``image-build/standin-base``
is unchanged (debootstrap under emulation is the slowest step after the build itself).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.imagekit import Built, opened_root, run

ROOT = Path(__file__).resolve().parents[2]
IMAGE_BUILD = ROOT / "image-build"
TOOLS = (
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds the SD image from a stand-in base (slow: minutes; root)")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the image build needs root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"missing {', '.join(missing)} (apt-get install debootstrap qemu-user-static binfmt-support "
            "mtools dosfstools fdisk e2fsprogs xz-utils)"
        )
    if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists() and shutil.which("qemu-aarch64-static") is None:
        return "qemu-user-static is not installed"
    return None


def _require() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get("IMAGE_TEST_REQUIRED") == "1":
        pytest.fail(f"IMAGE_TEST_REQUIRED=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def standin_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require()
    script = IMAGE_BUILD / "standin-base"
    cache = os.environ.get("IMAGE_TEST_CACHE")
    if cache:
        key = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
        path = Path(cache) / f"standin-{key}.img"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("base") / "standin.img"
    run(script, path, timeout=1200)
    return path


@pytest.fixture(scope="session")
def built(standin_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("image")
    output = folder / "appliance.img.xz"
    start = time.monotonic()
    done = subprocess.run(
        [IMAGE_BUILD / "build", standin_base, output],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        # xz's fastest level: the test checks what is in the image, not how small xz makes it;
        # the wheel is built by the tests' own Python, which has pip whatever python3 has.
        env={**os.environ, "XZ_OPT": "-1", "PYTHON": sys.executable},
    )
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"the build failed:\n{done.stdout}{done.stderr}"
    image = folder / "appliance.img"
    with image.open("wb") as stream:
        subprocess.run(["xz", "-dc", output], stdout=stream, check=True)
    try:
        with opened_root(image, folder / "root") as root:
            yield Built(standin_base, output, image, root, seconds, done.stderr)
    finally:
        image.unlink()  # 1.5 GB that pytest would keep for its last three runs
