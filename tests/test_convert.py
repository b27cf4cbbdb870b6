"""The conversion toolchain: its command line, calibration frames, validation report and manifest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.inference.detector import DetectorSettings, iou_one_to_many
from appliance.inference.loader import load_models
from appliance.inference.manifest import read_manifest, sha256_of
from appliance.inference.settings import InferenceSettings
from tests.conftest import ROOT, ToyModels
from tools.convert import ConvertError
from tools.convert.cli import main
from tools.convert.frames import sample_frames, split_held_out


def test_help_works_from_the_repository_root() -> None:
    for args in ([], ["keras"], ["keras", "captioner"]):
        result = subprocess.run(
            [sys.executable, "-m", "tools.convert", *args, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: python -m tools.convert")
    assert "detector" in result.stdout or "--vocab" in result.stdout


def test_each_slot_gets_its_files_metadata_and_manifest_entry(toy_models: ToyModels) -> None:
    folder = toy_models.folder
    manifest = read_manifest(folder)
    assert list(manifest.slots) == ["detector", "classifier", "captioner"]
    for name, entry in manifest.slots.items():
        assert entry.quantization == "int8"
        assert entry.command == f"toy {name} (tests/conftest.py)"  # the command the conversion was given
        for model in entry.models.values():
            assert sha256_of(folder / model.file) == model.sha256
            assert all(spec.dtype in ("int8", "int32") for spec in model.inputs.values())
        metadata = json.loads((folder / f"{name}.json").read_text())
        assert metadata["manifest_entry"] == entry.to_json()
        crops = toy_models.work / "calib" / "sets" / "crops"
        sampled = min(100, len(list(crops.rglob("*.png")))) if name == "classifier" else 60
        assert metadata["calibration"]["frames"] + metadata["calibration"]["held_out_frames"] == sampled
        for sizes in metadata["bytes"].values():
            assert sizes["int8"] < sizes["float"] / 2
    detector = dict(manifest.slots["detector"].params)
    assert {key: detector.pop(key) for key in ("person_classes", "fall_classes", "coords")} == {
        "person_classes": ["person"],
        "fall_classes": [],
        "coords": "normalized",
    }
    # chosen on the calibration frames (no source model to compare with: the boxes' median and 75th percentile)
    assert 0.25 <= detector.pop("presence_score") < detector.pop("confirm_score") <= 0.7
    assert str(detector.pop("presence_source")).startswith(("calibration: the median", "defaults: "))
    assert detector == {}
    assert manifest.slots["classifier"].params == {"crop_margin": 0.15, "output": "probabilities"}


def test_every_conversion_reports_float_against_int8_on_held_out_frames(toy_models: ToyModels) -> None:
    detector = json.loads((toy_models.folder / "detector.json").read_text())["validation"]
    assert detector["float_boxes"] >= 10
    assert detector["matched_rate"] >= 0.9
    assert detector["mean_iou"] >= 0.75
    assert re.search(
        rf"detector: {detector['matched_boxes']} of {detector['float_boxes']} float boxes matched by an int8 box",
        toy_models.log("detector"),
    )
    classifier = json.loads((toy_models.folder / "classifier.json").read_text())["validation"]
    assert classifier["top1_agreement"] >= 0.8
    assert 0.0 <= classifier["max_score_difference"] <= 1.0
    printed = (
        f"classifier: top-1 agreement {classifier['top1_agreement']:.1%} "
        f"({round(classifier['top1_agreement'] * classifier['frames'])} of {classifier['frames']} held-out crops), "
        f"largest score difference {classifier['max_score_difference']:.3f}"
    )
    assert printed in toy_models.log("classifier")
    captioner = json.loads((toy_models.folder / "captioner.json").read_text())["validation"]
    assert captioner["identical_token_rate"] >= 0.9
    assert len(captioner["examples"]) == 5
    assert re.search(r"captioner: identical tokens [\d.]+%, identical captions", toy_models.log("captioner"))


def test_pixel_box_heads_are_recognised_and_decode_to_the_same_boxes(toy_models: ToyModels) -> None:
    """A head with boxes in input pixels is recognised and decodes to the same places. Its int8
    scores are coarse (boxes up to the input's width, 160, share the tensor's step of about 160 / 255),
    which the toolchain warns about."""
    entry = read_manifest(toy_models.pixel_detector).slots["detector"]
    assert entry.params["coords"] == "pixels"
    assert "warning: the int8 output moves in steps of 0.627" in toy_models.log("detector-pixels")
    assert "warning" not in toy_models.log("detector")
    settings = InferenceSettings(threads=2, detector=DetectorSettings(labels=("person", "bag")))
    pixels = load_models(toy_models.pixel_detector, settings).detector
    normalised = load_models(toy_models.folder, settings).detector
    assert pixels is not None
    assert normalised is not None
    matched = total = 0
    for scene in toy_models.held_out[:40]:
        a, b = normalised.detect(scene.image), pixels.detect(scene.image)
        total += len(a)
        for detection in a:
            same = [d.box for d in b if d.class_id == detection.class_id]
            matched += bool(same) and iou_one_to_many(np.array(detection.box), np.array(same)).max() >= 0.5
    assert total >= 20
    assert matched / total >= 0.9, (matched, total)


def _indexed_frame(index: int) -> np.ndarray:
    return np.full((32, 48, 3), index * 10, np.uint8)


def test_frames_are_sampled_evenly_over_images_and_videos(tmp_path: Path) -> None:
    # a.png, b.png (frames 0, 1), c.avi (frames 2..21), d.png (frame 22): 23 frames in all
    cv2.imwrite(str(tmp_path / "a.png"), _indexed_frame(0))
    cv2.imwrite(str(tmp_path / "b.png"), _indexed_frame(1))
    writer = cv2.VideoWriter(str(tmp_path / "c.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10, (48, 32))
    for i in range(2, 22):
        writer.write(_indexed_frame(i))
    writer.release()
    sub = tmp_path / "more"
    sub.mkdir()
    cv2.imwrite(str(sub / "d.png"), _indexed_frame(22))
    (tmp_path / "notes.txt").write_text("not a frame")

    frames = sample_frames(tmp_path, 12)
    indices = [round(float(f.mean()) / 10) for f in frames]
    assert indices == [round(x) for x in np.linspace(0, 22, 12)]
    assert len(sample_frames(tmp_path, 100)) == 23
    calibration, held_out = split_held_out(frames)
    assert len(held_out) == 2
    assert len(calibration) == 10
    assert not any(any(f is h for h in held_out) for f in calibration)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda _: None, r"no images or videos"),
        (lambda d: (d / "broken.png").write_bytes(b"not a png"), r"broken\.png: cannot read the image"),
        (lambda d: (d / "one.png").write_bytes(cv2.imencode(".png", _indexed_frame(1))[1].tobytes()), r"at least 2"),
    ],
)
def test_unusable_calibration_folders_are_named(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    with pytest.raises(ConvertError, match=message):
        split_held_out(sample_frames(tmp_path, 10))


def test_command_line_errors_are_one_line_with_status_2(
    toy_models: ToyModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = toy_models.work
    labels = tmp_path / "labels.txt"
    labels.write_text("human\nbag\n")
    cases = [
        (
            ["keras", "detector", str(tmp_path / "missing.keras"), "--labels", str(work / "detector_labels.txt")],
            r"missing\.keras: no such file",
        ),
        (
            ["keras", "detector", str(work / "detector.keras"), "--labels", str(tmp_path / "no.txt")],
            r"no\.txt: no such file",
        ),
        (
            ["keras", "detector", str(work / "detector.keras"), "--labels", str(labels)],
            r"labels\.txt: no 'person' line; name the person classes with --person-labels \(the labels are",
        ),
    ]
    for args, message in cases:
        status = main(
            [*args, "--calib", str(work / "calib" / "frames"), "--calib-frames", "10", "--out", str(tmp_path / "out")]
        )
        err = capsys.readouterr().err
        assert status == 2
        last = err.strip().splitlines()[-1]
        assert last.startswith("tools.convert: "), err
        assert re.search(message, last), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("io", ["float", "int8"])
def test_the_model_card_counts_the_weights_a_file_stores(tmp_path: Path, io: str) -> None:
    import keras

    from tools.convert.model_card import stored_weights
    from tools.convert.tflite import convert, export_saved_model

    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(6, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    assert model.count_params() == 4 * 6 + 6 + 6 * 3 + 3
    # Trained weights: the converter leaves out a bias that is all zeros, as a fresh one is.
    model.set_weights([np.random.default_rng(i).normal(size=w.shape) for i, w in enumerate(model.get_weights())])
    saved = export_saved_model(model, tmp_path / "saved")
    samples = [{"x": np.random.default_rng(i).normal(size=(1, 4)).astype(np.float32)} for i in range(8)]
    convert(saved, tmp_path / "model.tflite", samples if io == "int8" else None, io)
    assert stored_weights(tmp_path / "model.tflite") == model.count_params()
