"""Helpers of the image tests: run a command, read an image's partitions and FAT files, run inside its root."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512


def run(*command: str | Path, timeout: float = 600) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    )
    return done.stdout


@dataclass(frozen=True)
class Partition:
    start: int  # sectors
    sectors: int
    type: str

    @property
    def offset(self) -> int:
        return self.start * SECTOR


def partitions(image: Path) -> list[Partition]:
    rows = run("partx", "-g", "-o", "START,SECTORS,TYPE", image).split("\n")
    return [Partition(int(start), int(sectors), kind) for start, sectors, kind in (r.split() for r in rows if r)]


def disk_id(image: Path) -> str:
    return next(
        line.split(":", 1)[1].strip()
        for line in run("sfdisk", "--dump", image).splitlines()
        if line.startswith("label-id")
    )


def fat_file(image: Path, name: str) -> bytes:
    boot = partitions(image)[0]
    done = subprocess.run(
        ["mtype", "-i", f"{image}@@{boot.offset}", f"::{name}"],
        capture_output=True,
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    return done.stdout


@dataclass(frozen=True)
class Built:
    base: Path
    output: Path  # the .img.xz
    image: Path  # it, decompressed
    root: Path  # its root file system, mounted
    build_seconds: float
    log: str


def in_root(root: Path, *command: str, timeout: float = 600, environment: tuple[str, ...] = ()) -> str:
    """Run ``command`` chrooted in ``root`` under emulation, with a clean environment (plus
    ``environment``, as NAME=VALUE) and a host name namespace of its own."""
    return run(
        "unshare",
        "--uts",
        "env",
        "-i",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
        *environment,
        "chroot",
        root,
        *command,
        timeout=timeout,
    )


def in_image(built: Built, *command: str, timeout: float = 600) -> str:
    """Run ``command`` in the built image's root (see :func:`in_root`)."""
    return in_root(built.root, *command, timeout=timeout)


@contextlib.contextmanager
def opened_root(image: Path, root: Path, grow: bool = False) -> Iterator[Path]:
    """The image's root file system mounted at ``root`` (grown to its partition first when ``grow``), ready
    for chroot: /proc, /run and the host's /dev. No /sys, as in the build: with the host's CPU topology in
    view, XNNPACK crashes int8 models under qemu-user. Everything is unmounted and detached afterwards.
    """
    partition = partitions(image)[1]
    loop = run(
        "losetup",
        "--find",
        "--show",
        "--offset",
        str(partition.offset),
        "--sizelimit",
        str(partition.sectors * SECTOR),
        image,
    ).strip()
    root.mkdir(exist_ok=True)
    mounts: list[Path] = []
    try:
        if grow:
            subprocess.run(["e2fsck", "-fy", loop], capture_output=True, check=False)
            run("resize2fs", loop)
        run("mount", loop, root)
        mounts.append(root)
        for kind, target in (("proc", "proc"), ("tmpfs", "run")):
            run("mount", "-t", kind, kind, root / target)
            mounts.append(root / target)
        run("mount", "--bind", "/dev", root / "dev")
        mounts.append(root / "dev")
        yield root
    finally:
        for mounted in reversed(mounts):
            subprocess.run(["umount", mounted], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
