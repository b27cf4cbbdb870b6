"""One slot's conversion from start to finish: calibrate, convert, validate, publish."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.inference.loader import build_slot
from appliance.inference.manifest import (
    MANIFEST_NAME,
    DataFile,
    Domain,
    Manifest,
    ModelFile,
    SlotEntry,
    read_manifest,
    sha256_of,
    write_manifest,
)
from appliance.inference.model import TFLiteModel
from appliance.inference.slot import signature_of
from tools.convert.frames import sample_frames, split_held_out
from tools.convert.report import conversion_figures, write_report
from tools.convert.slots import Agreement, SlotConversion
from tools.convert.tflite import as_saved_model, convert, tensorflow_version


@dataclass(frozen=True)
class Request:
    conversion: SlotConversion
    sources: dict[str, Path]  # model role -> .keras file or SavedModel folder
    data: dict[str, Path]  # data role -> labels or vocabulary file
    calib: Path
    calib_frames: int
    out: Path
    io: str
    threads: int
    command: str
    float_out: Path | None = None  # where to publish the float models too (a models folder of their own)
    toolchain: dict[str, str] = field(default_factory=dict)  # what else made the source (onnx2tf's version)
    report: bool = True  # write SLOT-report.md and .png into ``out`` (trainers write a fuller one themselves)
    # what the model was trained on; the conversion adds its validation figures. None: not said (then the
    # appliance validates the model for no camera)
    domain: Domain | None = None


@dataclass(frozen=True)
class Report:
    entry: SlotEntry
    agreement: Agreement
    metadata: Path
    sizes: dict[str, tuple[int, int]]  # model role -> (float bytes, int8 bytes)


def _entry(
    conversion: SlotConversion, folder: Path, quantization: str, params: dict[str, Any], command: str
) -> SlotEntry:
    models = {}
    for role, name in conversion.model_files.items():
        signature = signature_of(TFLiteModel(folder / name, threads=1))
        models[role] = ModelFile(name, sha256_of(folder / name), signature["inputs"], signature["outputs"])
    files = {role: DataFile(name, sha256_of(folder / name)) for role, name in conversion.data_files.items()}
    return SlotEntry(conversion.family, quantization, command, models, files, params)


def _stage(request: Request, folder: Path, quantization: str, params: dict[str, Any]) -> SlotEntry:
    """Copy the data files beside the models in ``folder`` and write a one-slot manifest there."""
    for role, name in request.conversion.data_files.items():
        shutil.copyfile(request.data[role], folder / name)
    entry = _entry(request.conversion, folder, quantization, params, request.command)
    write_manifest(Manifest(folder, {request.conversion.slot: entry}))
    return entry


def _copy_atomically(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def run(request: Request) -> Report:
    conversion, slot = request.conversion, request.conversion.slot
    calibration, held_out = split_held_out(sample_frames(request.calib, request.calib_frames))
    with tempfile.TemporaryDirectory(prefix="convert-") as work:
        workdir = Path(work)
        float_dir, int8_dir = workdir / "float", workdir / "int8"
        float_dir.mkdir()
        int8_dir.mkdir()
        saved = {role: as_saved_model(path, workdir) for role, path in request.sources.items()}
        for role, name in conversion.model_files.items():
            convert(saved[role], float_dir / name)
        float_models = {
            role: TFLiteModel(float_dir / name, request.threads) for role, name in conversion.model_files.items()
        }
        params = conversion.params(float_models, request.data, calibration)
        sample_counts = {}
        for role, name in conversion.model_files.items():
            samples = conversion.samples(role, float_models, calibration, params, request.data)
            sample_counts[role] = len(samples)
            convert(saved[role], int8_dir / name, samples, request.io)
        float_entry = _stage(request, float_dir, "float32", params)
        entry = _stage(request, int8_dir, "int8", params)

        settings = conversion.validation_settings(request.data, request.threads)
        reference = build_slot(read_manifest(float_dir), slot, conversion.registry, settings)
        quantized = build_slot(read_manifest(int8_dir), slot, conversion.registry, settings)
        agreement = conversion.agreement(reference, quantized, held_out)
        if request.domain is not None:
            figures = {"held_out_frames": len(held_out), "of": str(request.calib), **agreement.metrics}
            domain = replace(request.domain, validation={**request.domain.validation, "int8_against_float": figures})
            entry, float_entry = replace(entry, domain=domain), replace(float_entry, domain=domain)

        sizes = {
            role: ((float_dir / name).stat().st_size, (int8_dir / name).stat().st_size)
            for role, name in conversion.model_files.items()
        }
        _publish(int8_dir, request.out, conversion, entry)
        if request.float_out is not None:
            _publish(float_dir, request.float_out, conversion, float_entry)

    metadata = request.out / f"{slot}.json"
    record = {
        "slot": slot,
        "family": conversion.family,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": request.command,
        "sources": {
            role: {"path": str(path), "sha256": sha256_of(path) if path.is_file() else None}
            for role, path in request.sources.items()
        },
        # Keras and numpy too: a trained model is the same file only under the same versions of these
        "toolchain": {
            "appliance": __version__,
            "tensorflow": tensorflow_version(),
            "keras": version("keras"),
            "numpy": version("numpy"),
            **request.toolchain,
        },
        "calibration": {
            "folder": str(request.calib),
            "frames": len(calibration),
            "held_out_frames": len(held_out),
            "samples": sample_counts,
        },
        "io": request.io,
        "bytes": {role: {"float": f, "int8": q} for role, (f, q) in sizes.items()},
        "validation": agreement.metrics,
        "manifest_entry": entry.to_json(),
    }
    metadata.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if request.report:
        write_report(request.out, slot, conversion_figures(slot, request.command, agreement))
    return Report(entry, agreement, metadata, sizes)


def _publish(staged: Path, out: Path, conversion: SlotConversion, entry: SlotEntry) -> None:
    """Copy a slot's files from ``staged`` into the models folder ``out`` and enter it in its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for name in [*conversion.model_files.values(), *conversion.data_files.values()]:
        _copy_atomically(staged / name, out / name)
    manifest = read_manifest(out) if (out / MANIFEST_NAME).exists() else Manifest(out, {})
    write_manifest(Manifest(out, {**manifest.slots, conversion.slot: entry}))
