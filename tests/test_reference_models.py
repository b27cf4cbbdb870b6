"""The committed reference models do what their model card says.

The held-out set is rendered again (the world is deterministic), the committed int8 models are
measured through the appliance's own inference, and every figure must match ``metrics.json``;
the card must be the one ``metrics.json`` makes. So the card cannot drift from the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.inference.loader import load_models
from appliance.inference.manifest import read_manifest
from appliance.inference.settings import InferenceSettings
from tests.conftest import ROOT
from tools.convert.measure import measure
from tools.convert.model_card import card, targets
from tools.convert.reference import DOMAIN, held_out_figures
from tools.convert.synthetic import write_synthetic

MODELS = ROOT / "models"
# Integer inference is exact, but the float steps around it (dequantizing, softmax) may round
# differently on other CPUs' kernels: allow a hair, nothing more.
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def card_metrics() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / "metrics.json").read_text())
    return data


@pytest.fixture(scope="module")
def measured(card_metrics: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    plan = card_metrics["plan"]
    held_out = write_synthetic(tmp_path_factory.mktemp("held-out"), plan["seeds"]["held_out"], plan["held_out_images"])
    return measure(MODELS, held_out, plan["scenario_every"])


def _close(measured: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert set(measured) == set(expected), where
        for key in expected:
            _close(measured[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, float):
        assert measured == pytest.approx(expected, abs=TOLERANCE, nan_ok=True), where
    elif isinstance(expected, list):  # caption examples: the same count; wording may follow a rounding
        assert len(measured) == len(expected), where
    else:
        assert measured == expected, where


def test_the_committed_int8_models_measure_what_the_card_says(
    card_metrics: dict[str, Any], measured: dict[str, Any]
) -> None:
    _close(measured, card_metrics["int8"], "int8")


def test_the_card_is_the_one_its_metrics_make(card_metrics: dict[str, Any]) -> None:
    assert (MODELS / "README.md").read_text() == card(MODELS, card_metrics)


@pytest.mark.parametrize("name", [t.name for t in targets(json.loads((MODELS / "metrics.json").read_text()))])
def test_the_reference_models_meet_their_targets(card_metrics: dict[str, Any], name: str) -> None:
    """The bars of the synthetic world (see the card's targets table), one test each."""
    target = next(t for t in targets(card_metrics) if t.name == name)
    assert target.met, f"{name}: {target.measured:.3f}, wanted {target.wanted}"


def test_the_manifest_names_the_command_that_regenerates_the_models() -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    assert set(manifest["slots"]) == {"detector", "classifier", "captioner"}
    assert {entry["command"] for entry in manifest["slots"].values()} == {"python -m tools.convert reference"}


def test_the_manifest_says_the_shipped_models_know_the_synthetic_world_and_by_which_figures() -> None:
    """What lets them speak about a sim: camera and keeps them quiet about a real one (appliance.events.trust)."""
    manifest = read_manifest(MODELS)
    figures = held_out_figures(json.loads((MODELS / "metrics.json").read_text()))
    for name, entry in manifest.slots.items():
        assert entry.domain is not None, name
        assert (entry.domain.kind, entry.domain.data) == ("synthetic", DOMAIN.data)
        assert entry.domain.validation["held_out"] == figures[name]
        assert entry.domain.validation["int8_against_float"]["held_out_frames"] > 0


def test_the_appliance_loads_the_shipped_models_by_default() -> None:
    from appliance.inference.manifest import default_models_dir

    assert default_models_dir() == MODELS
    models = load_models(default_models_dir(), InferenceSettings(threads=1))
    assert models.detector is not None
    assert models.classifier is not None
    assert models.captioner is not None
    assert isinstance(models.manifest.folder, Path)
