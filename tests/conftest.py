"""Shared fixtures: the toy models, trained and converted once per session with ``tools.convert``.

Set ``TOY_MODELS_CACHE=DIR`` to keep them between runs while developing: they are reused
only while the code that makes them (tests' model kit and toy world, the toolchain, the
appliance's inference package) is byte-for-byte the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from tests import toyworld

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCENES, CALIB_SCENES, HELD_OUT_SCENES = 1000, 60, 120


@dataclass(frozen=True)
class ToyModels:
    folder: Path  # the models folder with all three int8 slots
    work: Path  # sources, calibration data, conversion logs
    held_out: list[toyworld.Scene]

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text()

    def io_variant(self, io_type: str) -> Path:
        """A models folder holding only the classifier, converted with ``io_type`` inputs and outputs."""
        return self.work / f"classifier-{io_type}"

    @property
    def pixel_detector(self) -> Path:
        """A models folder holding only the detector, whose head gives boxes in input pixels."""
        return self.work / "detector-pixels"


def _code_key() -> str:
    digest = hashlib.sha256()
    sources = [ROOT / "tests" / "modelkit.py", ROOT / "tests" / "toyworld.py", ROOT / "tests" / "conftest.py"]
    sources += sorted((ROOT / "tools" / "convert").glob("*.py")) + sorted(
        (ROOT / "appliance" / "inference").glob("*.py")
    )
    for path in sources:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _convert(args: list[str], log: Path) -> None:
    from tools.convert.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(args)
    log.write_text(out.getvalue())
    assert status == 0, f"tools.convert {' '.join(args)} failed with {status}"


def _write_calibration(work: Path) -> None:
    from appliance.inference.imaging import square_crop
    from tests import modelkit

    scenes = toyworld.scenes(seed=3, count=CALIB_SCENES)
    frames, crops = work / "calib" / "frames", work / "calib" / "crops"
    frames.mkdir(parents=True)
    crops.mkdir(parents=True)
    # Half the frames as images, half as a video: the toolchain samples both.
    for i, scene in enumerate(scenes[: CALIB_SCENES // 2]):
        cv2.imwrite(str(frames / f"frame{i:03d}.png"), scene.image)
    height, width = scenes[0].image.shape[:2]
    writer = cv2.VideoWriter(str(frames / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10, (width, height))
    for scene in scenes[CALIB_SCENES // 2 :]:
        writer.write(scene.image)
    writer.release()
    for i, scene in enumerate(scenes):
        for j, person in enumerate(scene.people):
            crop = cv2.cvtColor(
                square_crop(scene.image, person.fbox, modelkit.CLASSIFIER_MARGIN, 96), cv2.COLOR_RGB2BGR
            )
            cv2.imwrite(str(crops / f"crop{i:03d}_{j}.png"), crop)


def _build(work: Path) -> None:
    from tests import modelkit

    modelkit.seed_everything(0)
    train = toyworld.scenes(seed=1, count=TRAIN_SCENES)
    _write_calibration(work)
    (work / "detector_labels.txt").write_text("\n".join(toyworld.DETECTOR_LABELS) + "\n")
    (work / "classifier_labels.txt").write_text("\n".join(toyworld.CLASSIFIER_LABELS) + "\n")
    (work / "vocab.txt").write_text("\n".join(toyworld.VOCABULARY) + "\n")

    detector = modelkit.train_detector(train, epochs=10)
    modelkit.export_saved_model(detector, work / "detector.savedmodel")
    modelkit.export_saved_model(modelkit.with_pixel_boxes(detector), work / "detector-pixels.savedmodel")
    modelkit.train_classifier(train, epochs=3).save(work / "classifier.keras")
    encoder, decoder = modelkit.train_captioner(train, epochs=20)
    encoder.save(work / "encoder.keras")
    decoder.save(work / "decoder.keras")

    frames, crops, models = work / "calib" / "frames", work / "calib" / "crops", work / "models"
    detector_labels = ["--labels", str(work / "detector_labels.txt"), "--calib", str(frames), "--calib-frames", "60"]
    classifier = [
        str(work / "classifier.keras"),
        "--labels",
        str(work / "classifier_labels.txt"),
        "--calib",
        str(crops),
    ]
    classifier += ["--crop-margin", str(modelkit.CLASSIFIER_MARGIN), "--calib-frames", "100"]
    captioner = [str(work / "encoder.keras"), str(work / "decoder.keras"), "--vocab", str(work / "vocab.txt")]
    captioner += ["--calib", str(frames), "--calib-frames", "60", "--max-length", "8"]
    conversions = {
        "detector": ["detector", str(work / "detector.savedmodel"), *detector_labels, "--out", str(models)],
        "detector-pixels": ["detector", str(work / "detector-pixels.savedmodel"), *detector_labels],
        "classifier": ["classifier", *classifier, "--out", str(models)],
        "classifier-uint8": ["classifier", *classifier, "--io", "uint8"],
        "classifier-float": ["classifier", *classifier, "--io", "float"],
        "captioner": ["captioner", *captioner, "--out", str(models)],
    }
    for name, args in conversions.items():
        out = [] if "--out" in args else ["--out", str(work / name)]
        _convert(["keras", *args, *out], work / f"{name}.log")


@pytest.fixture(autouse=True)
def _no_appliance_settings_from_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their settings; a developer's own APPLIANCE_* variables must not leak in."""
    for key in list(os.environ):
        if key.startswith("APPLIANCE_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """In-process ``main()`` calls set up logging on the root logger, bound to that test's stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory: pytest.TempPathFactory) -> ToyModels:
    cache = os.environ.get("TOY_MODELS_CACHE")
    if cache:
        work = Path(cache) / f"toy-models-{_code_key()}"
        if not (work / "complete").exists():
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            _build(work)
            (work / "complete").touch()
    else:
        work = tmp_path_factory.mktemp("toy-models")
        _build(work)
    return ToyModels(work / "models", work, toyworld.scenes(seed=2, count=HELD_OUT_SCENES))


@pytest.fixture
def models_copy(toy_models: ToyModels, tmp_path: Path) -> Path:
    """A private copy of the toy models folder that a test may damage."""
    folder = tmp_path / "models"
    shutil.copytree(toy_models.folder, folder)
    return folder
