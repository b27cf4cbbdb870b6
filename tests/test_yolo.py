"""``tools.convert yolo``: a YOLOv8n-architecture network, exported to ONNX, converted through onnx2tf.

The network (tests/yolov8_torch.py) has Ultralytics' block structure and head, with seeded
random weights. It is calibrated on frames that ``appliance capture`` saved from two simulated
cameras, and its int8 model is compared with onnxruntime running the float ONNX: raw outputs,
and the boxes the appliance's own decoder finds in both.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime  # type: ignore[import-untyped]
import pytest

from appliance.capture import run_capture
from appliance.config import parse_config
from appliance.inference import yolov8
from appliance.inference.detector import Detector, DetectorSettings, iou_one_to_many
from appliance.inference.imaging import Image, letterbox, pixel_values
from appliance.inference.loader import load_models
from appliance.inference.manifest import read_manifest
from appliance.inference.model import TensorInfo
from appliance.inference.settings import InferenceSettings
from tools.convert.cli import main
from tools.convert.onnx2tf_env import ensure_environment

SIZE = 320
LABELS = ["person", *(f"class{i}" for i in range(1, 80))]


@dataclass(frozen=True)
class Converted:
    onnx: Path
    models: Path
    held_out: list[Image]  # frames of a scene the model was not calibrated on
    status: int
    log: str


def _capture(folder: Path, uri: str, camera: int, frames: int) -> list[Image]:
    import cv2

    config = parse_config({f"APPLIANCE_CAMERA_{camera}": uri})
    assert run_capture(config, camera, frames, folder, every=0.0) == 0
    return [np.asarray(cv2.imread(str(p)), np.uint8) for p in sorted(folder.glob(f"camera{camera}_*.png"))]


def _inputs(frames: list[Image]) -> np.ndarray:
    """What the appliance feeds the detector, NCHW for PyTorch and onnxruntime."""
    return np.stack([pixel_values(letterbox(f, SIZE, SIZE)[0], yolov8.PIXEL_RANGE) for f in frames]).transpose(
        0, 3, 1, 2
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    import contextlib
    import io

    import torch

    from tests import yolov8_torch

    ensure_environment()  # made once, in the checkout (CI's workspace): the slow part of a first run
    work = tmp_path_factory.mktemp("yolo")
    # Calibration frames as a user makes them: `appliance capture` on both cameras of the scene.
    calib = work / "calib"
    frames = _capture(calib, "sim:corridor-walk?seed=1&realtime=0", 0, 24)
    frames += _capture(calib, "sim:two-angles?seed=2&view=1&realtime=0", 1, 24)
    held_out = _capture(work / "held-out", "sim:room-fight?seed=3&realtime=0&loop=1", 0, 12)

    model = yolov8_torch.seeded(torch.from_numpy(_inputs(frames)))
    onnx = yolov8_torch.export_onnx(model, work / "yolov8n-seeded.onnx", SIZE)
    labels = work / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out = io.StringIO()
    args = ["yolo", str(onnx), "--labels", str(labels), "--calib", str(calib), "--calib-frames", "48"]
    with contextlib.redirect_stdout(out):
        status = main([*args, "--out", str(work / "models"), "--work", str(work / "work")])
    return Converted(onnx, work / "models", held_out, status, out.getvalue())


def test_the_converted_detector_is_an_int8_yolov8_slot(converted: Converted) -> None:
    assert converted.status == 0, converted.log
    entry = read_manifest(converted.models).slots["detector"]
    assert entry.family == "yolov8"
    assert entry.params == {"person_class": 0, "coords": "normalized"}
    (model,) = entry.models.values()
    (spec_in,) = model.inputs.values()
    (spec_out,) = model.outputs.values()
    assert (spec_in.shape, spec_in.dtype) == ((1, SIZE, SIZE, 3), "int8")
    assert (spec_out.shape, spec_out.dtype) == ((1, 84, 2100), "int8")
    metadata = json.loads((converted.models / "detector.json").read_text())
    assert metadata["toolchain"]["onnx2tf"] == "2.6.9"
    assert metadata["calibration"]["frames"] + metadata["calibration"]["held_out_frames"] == 48
    assert "detector: " in converted.log
    assert "float boxes matched by an int8 box" in converted.log


def _int8_raw(detector: Detector, frame: Image) -> np.ndarray:
    """The int8 model's output for ``frame``, dequantized: [4 + C, N], boxes in 0..1."""
    assert isinstance(detector, yolov8.Yolov8Detector)
    detector.detect(frame)
    model = detector.models["model"]
    output = model.only_output()
    return output.dequantize(model.get_raw(output)[0])


def _onnx_raw(session: object, frame: Image) -> np.ndarray:
    raw = session.run(None, {"images": _inputs([frame])})[0][0]  # type: ignore[attr-defined]
    return np.concatenate([raw[:4] / SIZE, raw[4:]]).astype(np.float32)


def test_int8_output_follows_onnxruntime_on_the_float_onnx(converted: Converted) -> None:
    settings = InferenceSettings(threads=2, detector=DetectorSettings(labels=tuple(LABELS), score_threshold=0.25))
    detector = load_models(converted.models, settings).detector
    assert detector is not None
    session = onnxruntime.InferenceSession(str(converted.onnx), providers=["CPUExecutionProvider"])
    box_errors, score_errors = [], []
    for frame in converted.held_out:
        expected, got = _onnx_raw(session, frame), _int8_raw(detector, frame)
        box_errors.append(np.abs(expected[:4] - got[:4]))
        score_errors.append(np.abs(expected[4:] - got[4:]))
    boxes, scores = np.concatenate(box_errors, 1), np.concatenate(score_errors, 1)
    step = detector.models["model"].only_output().scale
    print(
        f"int8 vs onnxruntime: box error mean {boxes.mean():.4f} max {boxes.max():.4f}, "
        f"score error mean {scores.mean():.4f} max {scores.max():.4f}, output step {step:.4f}"
    )
    print(f"99th percentiles: box {np.percentile(boxes, 99):.4f}, score {np.percentile(scores, 99):.4f}")
    # Within the int8 output's own step on average; the random weights give a few logits far out
    # in the tails, which the int8 ranges (set by calibration) clip.
    assert boxes.mean() < 1.5 * step
    assert scores.mean() < 1.5 * step
    assert np.percentile(boxes, 99) < 15 * step
    assert np.percentile(scores, 99) < 15 * step


def test_the_appliance_decoder_finds_the_same_top_boxes_in_both(converted: Converted) -> None:
    settings = DetectorSettings(labels=tuple(LABELS), score_threshold=0.25)
    detector = load_models(converted.models, InferenceSettings(threads=2, detector=settings)).detector
    assert detector is not None
    session = onnxruntime.InferenceSession(str(converted.onnx), providers=["CPUExecutionProvider"])
    float_output = TensorInfo("output0", 0, (1, 84, 2100), np.dtype(np.float32), 0.0, 0)
    class_ids = np.arange(len(LABELS))
    matched = compared = 0
    for frame in converted.held_out:
        layout = letterbox(frame, SIZE, SIZE)[1]
        boxes, _, classes = yolov8.decode(_onnx_raw(session, frame), float_output, class_ids, (SIZE, SIZE), settings)
        reference = layout.to_frame(boxes)[:5]  # the top five, best score first
        found = detector.detect(frame)
        for box, class_id in zip(reference, classes[:5], strict=True):
            same = [d.box for d in found if d.class_id == class_id]
            compared += 1
            matched += bool(same) and float(iou_one_to_many(box, np.array(same, np.float32)).max()) >= 0.5
    print(f"top boxes of onnxruntime matched by the int8 model: {matched} of {compared}")
    assert compared >= 20
    assert matched / compared >= 0.8


def test_a_model_exported_at_another_size_is_refused(
    converted: Converted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    args = ["yolo", str(converted.onnx), "--size", "256", "--labels", str(labels), "--calib", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "models"), "--work", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"tools.convert: {converted.onnx}: the input is 320x320, not 256x256: export it at imgsz=256 "
        "(yolo export format=onnx imgsz=256) or pass --size 320"
    )


def test_a_checkpoint_without_ultralytics_names_the_way_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("yolo"):
        pytest.skip("ultralytics is installed here")
    checkpoint = tmp_path / "yolov8n.pt"
    checkpoint.write_bytes(b"not used")
    assert main(["yolo", str(checkpoint), "--calib", str(tmp_path), "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "yolov8n.pt: a .pt checkpoint is exported to ONNX with the ultralytics package" in err
    assert "yolo export model=yolov8n.pt format=onnx imgsz=320" in err
