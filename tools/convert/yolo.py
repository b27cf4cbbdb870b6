"""An Ultralytics v8/11 detector (ONNX export, or a ``.pt`` with the ultralytics package) to the detector slot.

The route is the field's standard one, onnx2tf, which Ultralytics' own TFLite export uses:
the export is read and checked first (yolo_graph.read_export: classes, size, task, in well under
a second), its head rewritten for int8 at the requested size (yolo_graph.prepare), turned into a
SavedModel in onnx2tf's own environment (onnx2tf_worker.py; cached by the rewritten graph's
SHA-256, so a retry does not run it again), then the toolchain's usual conversion: float and
full-integer int8 calibrated on frames of ``--calib`` letterboxed as the appliance letterboxes,
validated against the float model and against the export itself at its own size (onnxruntime)
through the appliance's own decoder, published to the manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from appliance.inference import yolov8
from appliance.inference.detector import Detection, DetectorSettings
from appliance.inference.imaging import Image, letterbox, pixel_values
from appliance.inference.manifest import REAL, Domain
from appliance.inference.model import TensorInfo
from tools.convert import ConvertError
from tools.convert.onnx2tf_env import ensure_environment, stamp
from tools.convert.pipeline import Report, Request, run
from tools.convert.progress import progress
from tools.convert.slots import DetectorConversion
from tools.convert.yolo_graph import Export, prepare, read_export

WORKER = Path(__file__).with_name("onnx2tf_worker.py")
FALL_WORDS = ("fall", "fallen", "falling", "fall_down", "fall-down", "down", "lying")  # fallen-person class names


@dataclass(frozen=True, kw_only=True)
class YoloRequest:
    model: Path  # .onnx, or .pt with ultralytics installed
    size: tuple[int, int] | None  # (width, height); None: the export's own
    labels: Path | None  # else the class names in the export's metadata
    person_labels: tuple[str, ...] | None  # None: `person`, else every class
    fall_labels: tuple[str, ...] | None  # None: classes named like a fall
    calib: Path
    calib_frames: int
    out: Path
    work: Path  # the SavedModel cache, logs, and the float models (work/float), for comparison
    io: str
    threads: int
    command: str
    domain: str = REAL  # public weights are trained on real images; synthetic for one trained on drawn scenes
    data: str | None = None  # what it was trained on; None: what the export's metadata says


@dataclass(frozen=True)
class Classes:
    names: tuple[str, ...]
    persons: tuple[str, ...]
    falls: tuple[str, ...]
    labels: Path  # the labels file written or given


def to_onnx(model: Path, size: tuple[int, int] | None, work: Path) -> Path:
    """``model`` itself when it is ONNX; a ``.pt`` checkpoint exported with ultralytics."""
    if not model.is_file():
        raise ConvertError(f"{model}: no such file")
    if model.suffix == ".onnx":
        return model
    if model.suffix != ".pt":
        raise ConvertError(f"{model}: expected an ONNX export (.onnx) or an Ultralytics checkpoint (.pt)")
    imgsz = f"{size[1]},{size[0]}" if size is not None else "640"
    try:  # optional: heavy, AGPL, and not needed for ONNX input
        ultralytics = importlib.import_module("ultralytics")
    except ImportError:
        raise ConvertError(
            f"{model}: a .pt checkpoint is exported to ONNX with the ultralytics package, which is not installed: "
            f"pip install ultralytics, or export it elsewhere: yolo export model={model.name} format=onnx imgsz={imgsz}"
        ) from None
    work.mkdir(parents=True, exist_ok=True)
    copy = work / model.name  # the export is written beside the checkpoint
    shutil.copyfile(model, copy)
    exported = ultralytics.YOLO(str(copy)).export(
        format="onnx", imgsz=[int(v) for v in imgsz.split(",")], opset=17, simplify=True, dynamic=False, nms=False
    )
    return Path(exported)


def _pick(export: Export, names: tuple[str, ...], asked: tuple[str, ...], option: str) -> tuple[str, ...]:
    unknown = [name for name in asked if name not in names]
    if unknown:
        raise ConvertError(
            f"{export.path}: {option} {','.join(unknown)}: no such class; the model's classes are {', '.join(names)}"
        )
    return asked


def classes(export: Export, request: YoloRequest) -> Classes:
    """The class names and which of them are people and fallen people; refuses wrong requests at once."""
    if request.labels is not None:
        if not request.labels.is_file():
            raise ConvertError(f"{request.labels}: no such file")
        names = tuple(line.strip() for line in request.labels.read_text().splitlines() if line.strip())
        if len(names) != export.classes:
            raise ConvertError(f"{request.labels}: {len(names)} labels, but the model has {export.classes} classes")
        labels = request.labels
    elif export.names is not None:
        names = export.names
        request.work.mkdir(parents=True, exist_ok=True)
        labels = request.work / "detector_labels.txt"
        labels.write_text("\n".join(names) + "\n")
    else:
        raise ConvertError(f"{export.path}: the export names no classes in its metadata; give them with --labels FILE")
    if request.person_labels is not None:
        persons = _pick(export, names, request.person_labels, "--person-labels")
    else:  # `person` where the model has it (COCO); else a model of people only, as Normal/Fall
        persons = ("person",) if "person" in names else names
    if request.fall_labels is not None:
        falls = _pick(export, names, request.fall_labels, "--fall-labels")
    else:
        falls = tuple(name for name in persons if name.lower() in FALL_WORDS)
    strays = [name for name in falls if name not in persons]
    if strays:
        raise ConvertError(
            f"{export.path}: --fall-labels {','.join(strays)}: a fallen person is a person; add it to --person-labels"
        )
    return Classes(names, persons, falls, labels)


def _cache_key(prepared: bytes) -> str:
    """What decides onnx2tf's SavedModel: the rewritten graph, onnx2tf's environment and the worker's options."""
    digest = hashlib.sha256(prepared)
    digest.update(stamp().encode())
    digest.update(WORKER.read_bytes())
    return digest.hexdigest()[:20]


def to_saved_model(prepared: onnx.ModelProto, export: Export, work: Path) -> tuple[Path, dict[str, object]]:
    """onnx2tf's SavedModel of the prepared graph, from the cache in ``work`` or made by the worker."""
    data = prepared.SerializeToString()
    folder = (work / "onnx2tf" / _cache_key(data)).resolve()  # the worker runs in another folder
    summary = folder / "summary.json"
    if summary.is_file() and (folder / "savedmodel" / "saved_model.pb").is_file():
        print(f"onnx2tf: reusing {folder} (made earlier from the same graph and options)")
        return folder / "savedmodel", json.loads(summary.read_text())
    bin_dir = ensure_environment()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = folder / "prepared.onnx"
    source.write_bytes(data)
    command = [str(bin_dir / "python"), str(WORKER), str(source), str(folder)]
    started = time.monotonic()
    with (
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as worker,
        progress(desc=f"onnx2tf: {export.path.name} to a SavedModel", bar_format="{desc}: {elapsed}") as bar,
    ):
        while worker.poll() is None:
            time.sleep(0.5)
            bar.refresh()
        stdout, stderr = worker.communicate()
    if worker.returncode != 0:
        message = (stderr or stdout).strip().splitlines()
        raise ConvertError(message[-1] if message else f"{export.path}: onnx2tf's worker failed ({worker.returncode})")
    source.unlink()  # the SavedModel is what is kept
    record: dict[str, object] = {**json.loads(summary.read_text()), "seconds": round(time.monotonic() - started)}
    summary.write_text(json.dumps(record))
    return folder / "savedmodel", record


class ExportDetector:
    """The export itself, float, at its own size under onnxruntime, decoded by the appliance's decoder:
    the reference a smaller input and int8 are compared with."""

    def __init__(self, export: Export, names: tuple[str, ...], threads: int) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(str(export.path), options, providers=["CPUExecutionProvider"])
        self._input, self.size, self.labels = export.input, export.size, names
        self._output = TensorInfo("output0", 0, (1, 4 + export.classes, export.anchors), np.dtype(np.float32), 0.0, 0)
        self._scale = np.array([[export.size[0]], [export.size[1]]] * 2, np.float32)
        self._settings = DetectorSettings(labels=names, score_threshold=0.25)
        self._classes = np.arange(len(names))

    def detect(self, frame: Image) -> list[Detection]:
        image, layout = letterbox(frame, *self.size)
        values = pixel_values(image, yolov8.PIXEL_RANGE)[None].transpose(0, 3, 1, 2)
        raw = self._session.run(None, {self._input: values})[0][0]
        raw = np.concatenate([raw[:4] / self._scale, raw[4:]]).astype(np.float32)
        boxes, scores, found = yolov8.decode(raw, self._output, self._classes, self.size, self._settings)
        boxes = layout.to_frame(boxes)
        return [
            Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), int(c), self.labels[c])
            for b, s, c in zip(boxes, scores, found, strict=True)
        ]


def _trained_on(export: Export) -> str:
    said = f": {export.description}" if export.description else ""
    return f"the public weights of {export.path.name}{said}"


def convert_yolo(request: YoloRequest) -> tuple[Report, Export, Classes]:
    onnx_path = to_onnx(request.model, request.size, request.work)
    model, export = read_export(onnx_path)
    named = classes(export, request)
    size = request.size or export.size
    print(
        f"{export.path.name}: {export.classes} classes ({', '.join(named.names)}), exported at "
        f"{export.size[0]}x{export.size[1]}; converting at {size[0]}x{size[1]}; person classes "
        f"{', '.join(named.persons)}; fallen-person classes {', '.join(named.falls) or 'none'}"
    )
    prepared = prepare(model, export, size)
    saved_model, summary = to_saved_model(prepared, export, request.work)
    toolchain = {
        "onnx2tf": str(summary["onnx2tf"]),
        "export": str(export.path),
        "exported_size": f"{export.size[0]}x{export.size[1]}",
    }
    report = run(
        Request(
            DetectorConversion(
                named.persons,
                named.falls,
                "normalized",
                reference=ExportDetector(export, named.names, request.threads),
            ),
            {"model": saved_model},
            {"labels": named.labels},
            request.calib,
            request.calib_frames,
            request.out,
            request.io,
            request.threads,
            request.command,
            float_out=request.work / "float",
            toolchain=toolchain,
            domain=Domain(kind=request.domain, data=request.data or _trained_on(export)),
        )
    )
    return report, export, named
