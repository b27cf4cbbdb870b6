"""Choosing the TFLite runtime: LiteRT, else tflite_runtime, else tensorflow.lite; logged."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from appliance.errors import ModelError
from appliance.inference.model import TFLiteModel
from appliance.inference.runtime import select_runtime
from tests.conftest import ToyModels


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    """Each test makes the choice afresh, and leaves none behind for the tests after it."""
    select_runtime.cache_clear()
    yield
    select_runtime.cache_clear()


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError


def test_litert_is_chosen_first_and_the_choice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.inference.runtime"):
        runtime = select_runtime()
    assert runtime.name == "ai_edge_litert"
    assert f"TFLite runtime: ai_edge_litert {runtime.version}" in caplog.text


def test_without_litert_or_tflite_runtime_tensorflow_lite_runs_the_same_model(
    toy_models: ToyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = toy_models.folder / "classifier.tflite"
    image = np.random.default_rng(0).uniform(-1, 1, (1, 48, 48, 3)).astype(np.float32)
    litert = TFLiteModel(path, threads=1)
    expected = litert.run({litert.only_input().name: image})
    select_runtime.cache_clear()
    hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter")
    assert select_runtime().name == "tensorflow"
    fallback = TFLiteModel(path, threads=1)
    result = fallback.run({fallback.only_input().name: image})
    np.testing.assert_allclose(result[fallback.only_output().name], expected[litert.only_output().name], atol=1e-6)


def test_no_runtime_at_all_is_a_clear_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite", "tensorflow")
    with pytest.raises(ModelError, match=r"no TFLite runtime is installed: pip install ai-edge-litert"):
        select_runtime()
