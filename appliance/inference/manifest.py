"""``models/manifest.json``: the contract between the toolchain and the appliance.

The manifest names each model slot (detector, classifier, captioner), its family, its model files
with their SHA-256 and the exact signature of their input and output tensors, its data files
(labels, vocabulary) with their SHA-256, family parameters, the command that made it, and its
domain: what the model was trained on (``synthetic``: the appliance's drawn world; ``real``: real
footage or real public weights) with the figures it was validated by. The appliance lets a model
speak about a camera only where the domains agree (see ``appliance.events.trust``). The toolchain
writes it; the appliance verifies every file against it before loading, and every
failure names the file and that command.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ModelError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SLOTS = ("detector", "classifier", "captioner")
SYNTHETIC, REAL = "synthetic", "real"  # what a model was trained on: the drawn world, or real images
DOMAINS = (SYNTHETIC, REAL)
GENERIC_COMMAND = "python -m tools.convert --help"

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> JsonObject:
        return {"shape": list(self.shape), "dtype": self.dtype}

    def __str__(self) -> str:
        return "x".join(map(str, self.shape)) + " " + self.dtype


@dataclass(frozen=True)
class DataFile:
    file: str  # relative to the manifest's folder
    sha256: str

    def to_json(self) -> JsonObject:
        return {"file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class ModelFile(DataFile):
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            **super().to_json(),
            "inputs": {name: spec.to_json() for name, spec in self.inputs.items()},
            "outputs": {name: spec.to_json() for name, spec in self.outputs.items()},
        }


@dataclass(frozen=True, kw_only=True)
class Domain:
    """What a slot's model was trained on, and the figures it was validated by."""

    kind: str  # one of DOMAINS
    data: str  # the data set (or the weights' source), in words
    validation: JsonObject = field(default_factory=dict)  # figures measured on held-out data of that domain

    def to_json(self) -> JsonObject:
        return {"kind": self.kind, "data": self.data, "validation": self.validation}


@dataclass(frozen=True)
class SlotEntry:
    family: str
    quantization: str  # "int8", "uint8" or "float32": what the model files hold
    command: str  # the command that regenerates this slot
    models: dict[str, ModelFile]  # role ("model", "encoder", "decoder") -> file
    files: dict[str, DataFile]  # role ("labels", "vocab") -> file
    params: JsonObject  # family parameters
    domain: Domain | None = None  # None: an older manifest that does not say (the model is validated nowhere)

    def to_json(self) -> JsonObject:
        return {
            "family": self.family,
            "quantization": self.quantization,
            "command": self.command,
            "models": {role: m.to_json() for role, m in self.models.items()},
            "files": {role: f.to_json() for role, f in self.files.items()},
            "params": self.params,
        } | ({"domain": self.domain.to_json()} if self.domain is not None else {})


@dataclass(frozen=True)
class Manifest:
    folder: Path
    slots: dict[str, SlotEntry]

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def to_json(self) -> JsonObject:
        return {"version": MANIFEST_VERSION, "slots": {name: e.to_json() for name, e in self.slots.items()}}


def default_models_dir() -> Path:
    """``models/`` of the source checkout, else the one installed under ``<prefix>/share/appliance``."""
    checkout = Path(__file__).resolve().parents[2] / "models"
    installed = Path(sys.prefix) / "share" / "appliance" / "models"
    if not (checkout / MANIFEST_NAME).exists() and (installed / MANIFEST_NAME).exists():
        return installed
    return checkout


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FieldReader:
    """Typed access to a JSON object; errors name the manifest and the path of the field."""

    def __init__(self, manifest: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ModelError(f"{manifest}: {where or 'the top level'} must be a JSON object")
        self.manifest, self.where, self.data = manifest, where, data

    def location(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _fail(self, key: str, expected: str) -> ModelError:
        return ModelError(f"{self.manifest}: {self.location(key)}: expected {expected}")

    def get(self, key: str, kind: type, expected: str) -> Any:
        value = self.data.get(key)
        # JSON true/false are Python bools, which are also ints: keep them apart.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self._fail(key, expected)
        return value

    def text(self, key: str) -> str:
        value: str = self.get(key, str, "a string")
        return value

    def child(self, key: str) -> FieldReader:
        return FieldReader(self.manifest, self.location(key), self.get(key, dict, "a JSON object"))

    def children(self, key: str) -> dict[str, FieldReader]:
        node = self.child(key)
        return {name: node.child(name) for name in node.data}


def _tensor_specs(reader: FieldReader) -> dict[str, TensorSpec]:
    specs = {}
    for name in reader.data:
        tensor = reader.child(name)
        shape = tensor.get("shape", list, "a list of integers")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
            raise tensor._fail("shape", "a list of integers")
        specs[name] = TensorSpec(tuple(shape), tensor.text("dtype"))
    return specs


def _slot_entry(reader: FieldReader) -> SlotEntry:
    models = {
        role: ModelFile(
            m.text("file"), m.text("sha256"), _tensor_specs(m.child("inputs")), _tensor_specs(m.child("outputs"))
        )
        for role, m in reader.children("models").items()
    }
    files = {role: DataFile(f.text("file"), f.text("sha256")) for role, f in reader.children("files").items()}
    params: JsonObject = reader.get("params", dict, "a JSON object")
    return SlotEntry(
        reader.text("family"),
        reader.text("quantization"),
        reader.text("command"),
        models,
        files,
        params,
        _domain(reader.child("domain")) if "domain" in reader.data else None,
    )


def _domain(reader: FieldReader) -> Domain:
    kind = reader.text("kind")
    if kind not in DOMAINS:
        raise reader._fail("kind", " or ".join(repr(d) for d in DOMAINS))
    validation: JsonObject = reader.get("validation", dict, "a JSON object") if "validation" in reader.data else {}
    return Domain(kind=kind, data=reader.text("data"), validation=validation)


def read_manifest(folder: Path) -> Manifest:
    """Parse ``folder/manifest.json``; structure only, no model file is opened."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no model manifest here; make the models with: {GENERIC_COMMAND}") from None
    except OSError as error:
        raise ModelError(f"{path}: cannot read the model manifest: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not valid JSON ({error})") from None
    top = FieldReader(path, "", data)
    version = top.get("version", int, f"the manifest version {MANIFEST_VERSION}")
    if version != MANIFEST_VERSION:
        raise ModelError(f"{path}: manifest version {version}; this appliance reads version {MANIFEST_VERSION}")
    slots = {}
    for name, reader in top.children("slots").items():
        if name not in SLOTS:
            raise ModelError(f"{path}: slots.{name}: unknown slot; the slots are {', '.join(SLOTS)}")
        slots[name] = _slot_entry(reader)
    return Manifest(folder, slots)


def write_manifest(manifest: Manifest) -> None:
    """Write atomically: a reader never sees half a manifest."""
    manifest.folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    fd, temporary = tempfile.mkstemp(dir=manifest.folder, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the service user must read it
        os.replace(temporary, manifest.path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def verify_file(folder: Path, entry: SlotEntry, data: DataFile) -> Path:
    """The path of ``data``, after checking it exists and its SHA-256 matches the manifest."""
    path = folder / data.file
    fix = f"regenerate it with: {entry.command}"
    if not path.is_file():
        raise ModelError(f"{path}: missing; {fix}")
    actual = sha256_of(path)
    if actual != data.sha256:
        raise ModelError(
            f"{path}: SHA-256 is {actual[:12]}…, the manifest says {data.sha256[:12]}…: "
            f"the file was changed or is damaged; {fix}"
        )
    return path


def check_signature(
    path: Path, entry: SlotEntry, expected: ModelFile, actual: Mapping[str, Mapping[str, TensorSpec]]
) -> None:
    """Raise unless the model's tensors (``actual["inputs"]``, ``actual["outputs"]``) are those of the manifest."""
    for kind, wanted in (("inputs", expected.inputs), ("outputs", expected.outputs)):
        found = actual[kind]
        if set(found) != set(wanted):
            raise ModelError(
                f"{path}: {kind} are {', '.join(sorted(found))}, the manifest says {', '.join(sorted(wanted))}; "
                f"regenerate it with: {entry.command}"
            )
        for name, spec in wanted.items():
            if found[name] != spec:
                raise ModelError(
                    f"{path}: {kind[:-1]} {name!r} is {found[name]}, the manifest says {spec}; "
                    f"regenerate it with: {entry.command}"
                )
