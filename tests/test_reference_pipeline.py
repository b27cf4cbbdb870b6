"""``python -m tools.convert reference`` end to end, on its quick plan: tiny data, weak models.

The committed reference models take tens of minutes to make; this proves, in a few, that the one
command still goes from nothing to a models folder the appliance loads, with metrics and a card.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from appliance.inference.loader import load_models
from appliance.inference.settings import InferenceSettings
from tools.convert.cli import main
from tools.convert.model_card import card
from tools.convert.reference import QUICK

pytestmark = pytest.mark.slow  # the reference command from nothing: 3 minutes

# the work folder's markers of trained models
TRAINED = ("detector.trained", "classifier.trained", "captioner.trained")


def test_the_reference_command_makes_a_models_folder_from_nothing(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "models"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["reference", "--quick", "--work", str(work), "--out", str(out)])
    assert status == 0
    assert f"wrote the reference models, metrics.json and README.md to {out}" in printed.getvalue()
    models = load_models(out, InferenceSettings(threads=1))
    assert models.detector is not None
    assert models.classifier is not None
    assert models.captioner is not None
    assert models.classifier.labels == ("fall", "normal", "violence")
    metrics = json.loads((out / "metrics.json").read_text())
    # the held-out set and the captioner's training set have seeds of their own; the classifier's
    # set is the detector's stream drawn longer; the detector's empty scenes are a seed of their own too;
    # metrics.json records them, and the recipes the card describes the models by
    assert metrics["plan"] == {
        "train_images": 200,
        "crop_images": 240,
        "empty_images": 20,
        "caption_images": 200,
        "held_out_images": 40,
        "seeds": {"train": 1, "crops": 1, "held_out": 2, "captions": 3, "empty": 4},
        "scenario_every": 25,
        "recipes": json.loads(  # as JSON stores them: tuples as lists
            json.dumps(
                {
                    "detector": asdict(QUICK.detector),
                    "classifier": asdict(QUICK.classifier),
                    "captioner": asdict(QUICK.captioner),
                }
            )
        ),
    }
    sets = (("train", 1, 200), ("crops", 1, 240), ("test", 2, 40), ("captions", 3, 200), ("empty", 4, 20))
    for folder, seed, count in sets:
        assert json.loads((work / f"{folder}.done").read_text()) == {"seed": seed, "count": count}
    assert not any(f["people"] for f in json.loads((work / "empty" / "truth.json").read_text())["frames"])
    detector_frames = json.loads((work / "train" / "truth.json").read_text())["frames"]
    assert json.loads((work / "crops" / "truth.json").read_text())["frames"][:200] == detector_frames
    detector = json.loads((out / "manifest.json").read_text())["slots"]["detector"]["models"]["model"]
    assert detector["inputs"]["images"]["shape"] == [1, 320, 416, 3]  # the plan's camera-shaped input
    for kind in ("float", "int8"):
        assert metrics[kind]["detector"]["held_out"]["images"] == 40
        assert metrics[kind]["classifier"]["crops"] > 0
        assert metrics[kind]["captioner"]["frames"] == 40
    assert (out / "README.md").read_text() == card(out, metrics)
    assert (work / "float-models" / "manifest.json").exists()

    # a second run goes on from the work folder: nothing is trained again
    for marker in TRAINED:
        (work / marker).write_text("kept")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["reference", "--quick", "--work", str(work), "--out", str(out)]) == 0
    assert all((work / m).read_text() == "kept" for m in TRAINED)

    # training again, in a process that has already built all three models, makes the same files
    # byte for byte (Keras's automatic layer names are in them, and must not go on counting)
    def digests() -> dict[str, str]:
        files = [*out.glob("*.tflite"), *(work / "float-models").glob("*.tflite")]
        return {str(f.relative_to(tmp_path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    made = digests()
    assert len(made) == 8
    for marker in TRAINED:
        (work / marker).unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["reference", "--quick", "--work", str(work), "--out", str(out)]) == 0
    assert all((work / m).exists() for m in TRAINED)
    assert digests() == made

    _retrain_the_detector_alone(work, out, digests, made)


def _retrain_the_detector_alone(
    work: Path, out: Path, digests: Callable[[], dict[str, str]], made: dict[str, str]
) -> None:
    """--slots retrains the detector alone: the others keep their files and their figures in metrics.json."""
    first = json.loads((out / "metrics.json").read_text())
    edited = json.loads(json.dumps(first))
    edited["int8"]["classifier"]["accuracy"] = 0.123  # kept from the last run, not measured again
    edited["int8"]["detector"]["held_out"]["ap50"] = -1.0  # measured again
    (out / "metrics.json").write_text(json.dumps(edited))
    for marker in TRAINED:
        (work / marker).write_text("kept")
    (work / "detector.trained").unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["reference", "--quick", "--work", str(work), "--out", str(out), "--slots", "detector"]) == 0
    assert (work / "detector.trained").read_text() == ""
    assert all((work / m).read_text() == "kept" for m in TRAINED[1:])
    assert digests() == made
    again = json.loads((out / "metrics.json").read_text())
    assert again["int8"]["classifier"] == edited["int8"]["classifier"]
    assert again["int8"]["detector"] == first["int8"]["detector"]  # the same training makes the same model
    assert again["plan"] == first["plan"]
    assert (out / "README.md").read_text() == card(out, again)
    # the synthetic world boxes what people hold: the detector learns knife, bag and phone, and is measured on them
    assert set(first["int8"]["detector"]["objects"]) <= {"knife", "bag", "phone"}
    assert first["int8"]["detector"]["objects"]


def test_retraining_some_slots_needs_the_figures_of_the_others(tmp_path: Path) -> None:
    from tools.convert import ConvertError
    from tools.convert.reference import run_reference

    with pytest.raises(ConvertError, match=r"metrics\.json: not there"):
        run_reference(tmp_path / "work", tmp_path / "models", QUICK, slots=("detector",))
    assert not (tmp_path / "work").exists()  # refused before anything was rendered or trained


def test_an_unknown_slot_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reference", "--slots", "detector,tracker"])
    assert "expected slots among detector, classifier, captioner, got detector,tracker" in capsys.readouterr().err
