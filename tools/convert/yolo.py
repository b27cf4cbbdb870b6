"""An Ultralytics v8/11 detector (ONNX export, or a ``.pt`` with the ultralytics package) to the detector slot.

The route is the field's standard one, onnx2tf, which Ultralytics' own TFLite export uses:
ONNX -> SavedModel in onnx2tf's own environment (onnx2tf_worker.py, box rows normalised to
0..1 inside the graph), then the toolchain's usual conversion: float and full-integer int8
calibrated on frames of ``--calib`` letterboxed as the appliance letterboxes, validated against
the float model through the appliance's own decoder, published to the manifest.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tools.convert import ConvertError
from tools.convert.onnx2tf_env import ensure_environment
from tools.convert.pipeline import Report, Request, run
from tools.convert.progress import progress
from tools.convert.slots import DetectorConversion

WORKER = Path(__file__).with_name("onnx2tf_worker.py")


@dataclass(frozen=True)
class YoloRequest:
    model: Path  # .onnx, or .pt with ultralytics installed
    size: int
    labels: Path | None  # else the class names in the export's metadata
    person_label: str
    calib: Path
    calib_frames: int
    out: Path
    work: Path
    io: str
    threads: int
    command: str


def to_onnx(model: Path, size: int, work: Path) -> Path:
    """``model`` itself when it is ONNX; a ``.pt`` checkpoint exported with ultralytics at ``size``."""
    if not model.is_file():
        raise ConvertError(f"{model}: no such file")
    if model.suffix == ".onnx":
        return model
    if model.suffix != ".pt":
        raise ConvertError(f"{model}: expected an ONNX export (.onnx) or an Ultralytics checkpoint (.pt)")
    try:  # optional: heavy, AGPL, and not needed for ONNX input
        ultralytics = importlib.import_module("ultralytics")
    except ImportError:
        raise ConvertError(
            f"{model}: a .pt checkpoint is exported to ONNX with the ultralytics package, which is not installed: "
            f"pip install ultralytics, or export it elsewhere: yolo export model={model.name} format=onnx imgsz={size}"
        ) from None
    work.mkdir(parents=True, exist_ok=True)
    copy = work / model.name  # the export is written beside the checkpoint
    shutil.copyfile(model, copy)
    exported = ultralytics.YOLO(str(copy)).export(
        format="onnx", imgsz=size, opset=17, simplify=True, dynamic=False, nms=False
    )
    return Path(exported)


def to_saved_model(onnx: Path, size: int, work: Path) -> tuple[Path, dict[str, object]]:
    """Run the worker in onnx2tf's environment; the SavedModel and the worker's summary of the graph."""
    bin_dir = ensure_environment()
    shutil.rmtree(work / "onnx2tf", ignore_errors=True)
    command = [str(bin_dir / "python"), str(WORKER), str(onnx.resolve()), str((work / "onnx2tf").resolve()), str(size)]
    with (
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as worker,
        progress(desc=f"onnx2tf: {onnx.name} to a SavedModel", bar_format="{desc}: {elapsed}") as bar,
    ):
        while worker.poll() is None:
            time.sleep(0.5)
            bar.refresh()
        stdout, stderr = worker.communicate()
    if worker.returncode != 0:
        message = (stderr or stdout).strip().splitlines()
        raise ConvertError(message[-1] if message else f"{onnx}: onnx2tf's worker failed ({worker.returncode})")
    summary: dict[str, object] = json.loads((work / "onnx2tf" / "summary.json").read_text())
    return work / "onnx2tf" / "savedmodel", summary


def _labels(request: YoloRequest, summary: dict[str, object]) -> Path:
    classes = summary.get("classes")
    if request.labels is not None:
        if not request.labels.is_file():
            raise ConvertError(f"{request.labels}: no such file")
        count = len([line for line in request.labels.read_text().splitlines() if line.strip()])
        if isinstance(classes, int) and count != classes:
            raise ConvertError(f"{request.labels}: {count} labels, but the model has {classes} classes")
        return request.labels
    names = summary.get("names")
    if not isinstance(names, list):
        raise ConvertError(
            f"{request.model}: the export names no classes in its metadata; give them with --labels FILE"
        )
    written = request.work / "detector_labels.txt"
    written.write_text("\n".join(str(n) for n in names) + "\n")
    return written


def convert_yolo(request: YoloRequest) -> Report:
    request.work.mkdir(parents=True, exist_ok=True)
    onnx = to_onnx(request.model, request.size, request.work)
    saved_model, summary = to_saved_model(onnx, request.size, request.work)
    labels = _labels(request, summary)
    return run(
        Request(
            DetectorConversion(request.person_label, "normalized"),
            {"model": saved_model},
            {"labels": labels},
            request.calib,
            request.calib_frames,
            request.out,
            request.io,
            request.threads,
            request.command,
            toolchain={"onnx2tf": str(summary["onnx2tf"]), "source": str(request.model)},
        )
    )
