"""The SD image test: a stand-in base image, the build run on it once, and its result opened for inspection.

Everything here needs root (debootstrap, loop devices, mounts, chroot), qemu-user-static with
binfmt_misc, the image tools and the network (Debian's mirror and PyPI); where any of that is
missing the tests fail naming it (``TEST_WITHOUT=image`` skips them; see tests/parts.py).

The stand-in base image is kept between runs (tests/cache.py) while ``image-build/standin-base``
is unchanged (debootstrap under emulation is the slowest step after the build itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cache
from tests.image.imagekit import Built, opened_root, run
from tests.parts import need

ROOT = Path(__file__).resolve().parents[2]
IMAGE_BUILD = ROOT / "image-build"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds the SD image from a stand-in base (slow: minutes; root)")


def _require() -> None:
    need("root")
    need("image")


@pytest.fixture(scope="session")
def standin_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require()
    script = IMAGE_BUILD / "standin-base"
    kept = cache.entry("standin", cache.key([script]), ".img")
    if kept is not None and kept.exists():
        return kept
    path = tmp_path_factory.mktemp("base") / "standin.img"
    run(script, path, timeout=1200)
    if kept is None:
        return path
    shutil.move(path, kept)  # whole or not at all: a run stopped midway leaves no half image
    return kept


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
