"""Which TFLite interpreter runs the models.

LiteRT (``ai_edge_litert``) first: it delegates whole int8 graphs to XNNPACK. Then
``tflite_runtime`` (2.14 needs numpy<2 and runs int8 graphs without XNNPACK, 20-40x slower),
then ``tensorflow.lite`` (a desktop with the toolchain installed).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import ModelError

log = logging.getLogger(__name__)

# (module to import, attribute path of its Interpreter class, distribution whose version is reported)
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("ai_edge_litert.interpreter", "Interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite-runtime"),
    # tf.lite is a public alias of TensorFlow's API, not importable as tensorflow.lite itself
    ("tensorflow", "lite.Interpreter", "tensorflow"),
)


@dataclass(frozen=True)
class Runtime:
    module: str
    version: str
    interpreter: Callable[..., Any]

    @property
    def name(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown version"


@functools.cache
def select_runtime() -> Runtime:
    """The first importable runtime of CANDIDATES; logged once."""
    for module_name, attribute, distribution in CANDIDATES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found: Any = importlib.import_module(module_name)
                for name in attribute.split("."):
                    found = getattr(found, name)
        except (ImportError, AttributeError):
            continue
        runtime = Runtime(module_name, _version(distribution), found)
        log.info("TFLite runtime: %s", runtime)
        return runtime
    raise ModelError(
        "no TFLite runtime is installed: pip install ai-edge-litert (or tflite-runtime with numpy<2, or tensorflow)"
    )


def thread_count(configured: int) -> int:
    """Interpreter threads: the configured count, or one per CPU core for 0."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def make_interpreter(path: str, threads: int) -> Any:
    """A new interpreter for ``path`` with XNNPACK (the runtime's default delegate) on ``threads``."""
    runtime = select_runtime()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tensorflow.lite's deprecation notice
        return runtime.interpreter(model_path=path, num_threads=threads)
