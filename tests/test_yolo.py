"""``tools.convert yolo``: a YOLOv8n-architecture network, exported to ONNX, rewritten, converted through onnx2tf.

The network (tests/yolov8_torch.py) has Ultralytics' block structure and head, with seeded
random weights, and its export carries Ultralytics' metadata (class names, size, task). It is
calibrated on frames that ``appliance capture`` saved from two simulated cameras, and its int8
model is compared with onnxruntime running the float ONNX: raw outputs, and the boxes the
appliance's own decoder finds in both. The head's rewrite (yolo_graph) is checked on the ONNX
itself: the same outputs at the export's size, and at another size the outputs of an export made
at that size. tests/test_real_detector.py does the same on the real YOLOv8s weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
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
from tools.convert.slots import score_step_near_half
from tools.convert.yolo_graph import LOGIT_BOUND, prepare, read_export

pytestmark = pytest.mark.slow  # exports and converts YOLO networks

SIZE = (320, 320)
LABELS = ["person", *(f"class{i}" for i in range(1, 80))]
SCORE_LIMITS = (1 / (1 + np.exp(LOGIT_BOUND)), 1 / (1 + np.exp(-LOGIT_BOUND)))  # the rewrite bounds the scores


def with_metadata(path: Path, names: list[str], task: str = "detect") -> Path:
    """The export with the metadata Ultralytics writes into it."""
    model = onnx.load(str(path))
    shape = model.graph.input[0].type.tensor_type.shape.dim
    metadata = {
        "names": repr(dict(enumerate(names))),
        "imgsz": repr([shape[2].dim_value, shape[3].dim_value]),
        "task": task,
        "stride": "32",
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@dataclass(frozen=True)
class Seeded:
    onnx: Path  # exported at SIZE, with metadata
    wide: Path  # the same weights exported at 416x320
    calib: Path  # calibration frames
    held_out: list[Image]  # frames of a scene the model was not calibrated on


@dataclass(frozen=True)
class Converted:
    seeded: Seeded
    models: Path
    status: int
    log: str


def _capture(folder: Path, uri: str, camera: int, frames: int) -> list[Image]:
    import cv2

    config = parse_config({f"APPLIANCE_CAMERA_{camera}": uri})
    assert run_capture(config, camera, frames, folder, every=0.0) == 0
    return [np.asarray(cv2.imread(str(p)), np.uint8) for p in sorted(folder.glob(f"camera{camera}_*.png"))]


def _inputs(frames: list[Image], size: tuple[int, int] = SIZE) -> np.ndarray:
    """What the appliance feeds the detector, NCHW for PyTorch and onnxruntime."""
    return np.stack([pixel_values(letterbox(f, *size)[0], yolov8.PIXEL_RANGE) for f in frames]).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    import torch

    from tests import yolov8_torch

    work = tmp_path_factory.mktemp("yolo")
    # Calibration frames as a user makes them: `appliance capture` on both cameras of the scene.
    calib = work / "calib"
    frames = _capture(calib, "sim:corridor-walk?seed=1&realtime=0", 0, 24)
    frames += _capture(calib, "sim:two-angles?seed=2&view=1&realtime=0", 1, 24)
    held_out = _capture(work / "held-out", "sim:room-fight?seed=3&realtime=0&loop=1", 0, 12)
    model = yolov8_torch.seeded(torch.from_numpy(_inputs(frames)))
    square = yolov8_torch.export_onnx(model, work / "yolov8n-seeded.onnx", SIZE)
    wide = yolov8_torch.export_onnx(yolov8_torch.at_size(model, (416, 320)), work / "wide.onnx", (416, 320))
    return Seeded(with_metadata(square, LABELS), with_metadata(wide, LABELS), calib, held_out)


@pytest.fixture(scope="module")
def converted(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    ensure_environment()  # made once, in the checkout (CI's workspace): the slow part of a first run
    work = tmp_path_factory.mktemp("converted")
    out = io.StringIO()
    args = ["yolo", str(seeded.onnx), "--calib", str(seeded.calib), "--calib-frames", "48"]
    with contextlib.redirect_stdout(out):
        status = main([*args, "--out", str(work / "models"), "--work", str(work / "work")])
    return Converted(seeded, work / "models", status, out.getvalue())


def _session(model: onnx.ModelProto | Path) -> onnxruntime.InferenceSession:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def test_an_export_is_read_in_well_under_a_second_with_its_classes_and_size(seeded: Seeded) -> None:
    start = time.monotonic()
    _, export = read_export(seeded.onnx)
    assert time.monotonic() - start < 1.0
    assert (export.size, export.classes, export.anchors, export.task) == (SIZE, 80, 2100, "detect")
    assert export.names == tuple(LABELS)


def test_the_rewritten_head_gives_the_exports_boxes_as_fractions_and_its_scores(seeded: Seeded) -> None:
    """The rewrite changes units and bounds, nothing else: boxes / size (within 0..1), scores within the bound."""
    model, export = read_export(seeded.onnx)
    original, rewritten = _session(seeded.onnx), _session(prepare(model, export, SIZE))
    images = _inputs(seeded.held_out[:3])
    for image in images:
        expected = original.run(None, {"images": image[None]})[0][0]
        got = rewritten.run(None, {"images": image[None]})[0][0]
        np.testing.assert_allclose(got[:4], np.clip(expected[:4] / SIZE[0], 0.0, 1.0), atol=1e-5)
        np.testing.assert_allclose(got[4:], np.clip(expected[4:], *SCORE_LIMITS), atol=1e-5)


def test_a_graph_resized_to_416x320_gives_what_an_export_at_416x320_gives(seeded: Seeded) -> None:
    """The head is convolutional: the anchors and strides made anew are those Ultralytics makes for the size."""
    square, export = read_export(seeded.onnx)
    wide, wide_export = read_export(seeded.wide)
    resized, reference = _session(prepare(square, export, (416, 320))), _session(prepare(wide, wide_export, (416, 320)))
    for image in _inputs(seeded.held_out[:3], (416, 320)):
        got = resized.run(None, {"images": image[None]})[0][0]
        expected = reference.run(None, {"images": image[None]})[0][0]
        assert got.shape == (84, 52 * 40 + 26 * 20 + 13 * 10)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_converted_detector_is_an_int8_yolov8_slot(converted: Converted) -> None:
    assert converted.status == 0, converted.log
    entry = read_manifest(converted.models).slots["detector"]
    assert entry.family == "yolov8"
    params = dict(entry.params)
    assert params.pop("person_classes") == ["person"]  # the metadata's names: `person` is the person
    assert params.pop("fall_classes") == []
    assert params.pop("coords") == "normalized"
    assert 0.25 <= params.pop("presence_score") < params.pop("confirm_score") <= 0.7
    assert str(params.pop("presence_source")).startswith("calibration: presence ")
    assert params == {}
    (model,) = entry.models.values()
    (spec_in,) = model.inputs.values()
    (spec_out,) = model.outputs.values()
    assert (spec_in.shape, spec_in.dtype) == ((1, SIZE[1], SIZE[0], 3), "int8")
    assert (spec_out.shape, spec_out.dtype) == ((1, 84, 2100), "int8")
    metadata = json.loads((converted.models / "detector.json").read_text())
    assert metadata["toolchain"]["onnx2tf"] == "2.6.9"
    assert metadata["toolchain"]["exported_size"] == "320x320"
    assert metadata["calibration"]["frames"] + metadata["calibration"]["held_out_frames"] == 48
    assert "float boxes matched by an int8 box" in converted.log
    assert "against the source at 320x320" in converted.log


def test_int8_scores_near_half_are_at_most_a_hundredth_apart(converted: Converted) -> None:
    """The class logits have their own int8 scale (the bound's), not the 64 box logits'."""
    step = score_step_near_half(converted.models / "detector.tflite")
    assert step is not None
    assert step <= 0.01


def test_a_second_conversion_reuses_onnx2tfs_saved_model(converted: Converted, tmp_path: Path) -> None:
    work = converted.models.parent / "work"
    args = ["yolo", str(converted.seeded.onnx), "--calib", str(converted.seeded.calib), "--calib-frames", "10"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--out", str(tmp_path / "models"), "--work", str(work)]) == 0
    assert "onnx2tf: reusing" in out.getvalue()


def _int8_raw(detector: Detector, frame: Image) -> np.ndarray:
    """The int8 model's output for ``frame``, dequantized: [4 + C, N], boxes in 0..1."""
    assert isinstance(detector, yolov8.Yolov8Detector)
    detector.detect(frame)
    model = detector.models["model"]
    output = model.only_output()
    return output.dequantize(model.get_raw(output)[0])


def _onnx_raw(session: onnxruntime.InferenceSession, frame: Image) -> np.ndarray:
    """The float export's output, boxes as fractions: the rewrite clips boxes to 0..1 and bounds the scores."""
    raw = session.run(None, {"images": _inputs([frame])})[0][0]
    return np.concatenate([np.clip(raw[:4] / SIZE[0], 0, 1), np.clip(raw[4:], *SCORE_LIMITS)]).astype(np.float32)


def test_int8_output_follows_onnxruntime_on_the_float_onnx(converted: Converted) -> None:
    settings = InferenceSettings(threads=2, detector=DetectorSettings(labels=tuple(LABELS), score_threshold=0.25))
    detector = load_models(converted.models, settings).detector
    assert detector is not None
    session = _session(converted.seeded.onnx)
    box_errors, score_errors = [], []
    for frame in converted.seeded.held_out:
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
    # Within one and a half steps of an int8 output spanning 0..2 (2/255, the step before the boxes were
    # clipped to 0..1: clipping halved the output's step, not the network's noise) on average; the random
    # weights give a few logits far out in the tails, which the int8 ranges (set by calibration) clip.
    tolerance = 1.5 * 2 / 255
    assert step <= 2 / 255
    assert boxes.mean() < tolerance
    assert scores.mean() < tolerance
    assert np.percentile(boxes, 99) < 10 * tolerance
    assert np.percentile(scores, 99) < 10 * tolerance


def test_the_appliance_decoder_finds_the_same_top_boxes_in_both(converted: Converted) -> None:
    settings = DetectorSettings(labels=tuple(LABELS), score_threshold=0.25)
    detector = load_models(converted.models, InferenceSettings(threads=2, detector=settings)).detector
    assert detector is not None
    session = _session(converted.seeded.onnx)
    float_output = TensorInfo("output0", 0, (1, 84, 2100), np.dtype(np.float32), 0.0, 0)
    class_ids = np.arange(len(LABELS))
    matched = compared = 0
    for frame in converted.seeded.held_out:
        layout = letterbox(frame, *SIZE)[1]
        boxes, _, classes = yolov8.decode(_onnx_raw(session, frame), float_output, class_ids, SIZE, settings)
        reference = layout.to_frame(boxes)[:5]  # the top five, best score first
        found = detector.detect(frame)
        for box, class_id in zip(reference, classes[:5], strict=True):
            same = [d.box for d in found if d.class_id == class_id]
            compared += 1
            matched += bool(same) and float(iou_one_to_many(box, np.array(same, np.float32)).max()) >= 0.5
    print(f"top boxes of onnxruntime matched by the int8 model: {matched} of {compared}")
    assert compared >= 20
    assert matched / compared >= 0.8


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not-detect", "expected [1, 4 + classes, anchors], an Ultralytics v8/11 detection head"),
        ("segment", "a 'segment' export; the detector slot takes a 'detect' one"),
        ("no-such-person", "--person-labels Human: no such class; the model's classes are person, class1"),
        ("fall-not-person", "--fall-labels class2: a fallen person is a person; add it to --person-labels"),
        ("size", "expected N or WxH, each a multiple of 32 from 32 up, got 400x300"),
    ],
)
def test_wrong_requests_are_refused_in_the_first_second_with_one_line(
    case: str, message: str, seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    model, extra = seeded.onnx, []
    if case == "not-detect":  # a classifier: [1, 3, 224, 224] -> [1, 10]
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10))
        model = tmp_path / "classifier.onnx"
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(model), input_names=["images"], dynamo=False)
    elif case == "segment":
        # a later entry of a key stands, as in a dict: the copy now says it segments
        model = with_metadata(Path(shutil.copy(seeded.onnx, tmp_path / "seg.onnx")), LABELS, task="segment")
    elif case == "no-such-person":
        extra = ["--person-labels", "Human"]
    elif case == "fall-not-person":
        extra = ["--fall-labels", "class2"]
    else:
        extra = ["--size", "400x300"]
    args = ["yolo", str(model), *extra, "--calib", str(tmp_path), "--out", str(tmp_path / "m"), "--work", str(tmp_path)]
    start = time.monotonic()
    if case == "size":
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
    else:
        assert main(args) == 2
    assert time.monotonic() - start < 2.0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in line
    assert not (tmp_path / "m").exists()


def test_a_checkpoint_without_ultralytics_names_the_way_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("yolo"):
        pytest.skip("ultralytics is installed here")
    checkpoint = tmp_path / "yolov8n.pt"
    checkpoint.write_bytes(b"not used")
    assert main(["yolo", str(checkpoint), "--calib", str(tmp_path), "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "yolov8n.pt: a .pt checkpoint is exported to ONNX with the ultralytics package" in err
    assert "yolo export model=yolov8n.pt format=onnx imgsz=640" in err
