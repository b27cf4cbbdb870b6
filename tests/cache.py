"""What the tests make once and keep between runs, under a content key.

``TEST_CACHE=DIR`` chooses the folder (default ``$XDG_CACHE_HOME/appliance-tests``, that is
``~/.cache/appliance-tests``); ``TEST_CACHE=off`` makes everything afresh in the run's temporary
folder. An entry is named by its kind and the hash of everything that makes it, so it is reused
only while that is byte for byte the same; making a new entry removes the older ones of its kind.
Two folders are the toolchain's own, which keys what it keeps itself: the onnx2tf environment
(``ONNX2TF_VENV``) and onnx2tf's SavedModels (``YOLO_WORK``, for the tests and the image build).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

VARIABLE = "TEST_CACHE"


def folder() -> Path | None:
    """The cache folder, or None when caching is off."""
    chosen = os.environ.get(VARIABLE, "")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "appliance-tests"


def key(paths: Iterable[Path]) -> str:
    """The content key of ``paths`` (their bytes, in the order given)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def entry(kind: str, content_key: str, suffix: str = "") -> Path | None:
    """Where the ``kind`` made from ``content_key`` is kept (it may not exist yet), the older ``kind``
    entries removed; None when caching is off."""
    root = folder()
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{kind}-{content_key}{suffix}"
    for old in root.glob(f"{kind}-*"):
        if old != path:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    return path


def share_with_the_toolchain() -> None:
    """Point the toolchain's own caches (this process and every one it starts) into the cache folder,
    unless they are set already or caching is off."""
    root = folder()
    if root is not None:
        os.environ.setdefault("ONNX2TF_VENV", str(root / "onnx2tf-venv"))
        os.environ.setdefault("YOLO_WORK", str(root / "yolo"))


def yolo_work() -> Path:
    """Where onnx2tf's SavedModels are kept: ``YOLO_WORK``, else the checkout's ``work/yolo``."""
    return Path(os.environ.get("YOLO_WORK") or Path(__file__).resolve().parents[1] / "work" / "yolo")
