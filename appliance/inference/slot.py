"""A manifest slot whose files were verified and whose models were loaded: what a family is built from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ModelError
from appliance.inference.manifest import FieldReader, SlotEntry, TensorSpec, check_signature, verify_file
from appliance.inference.model import TensorInfo, TFLiteModel


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a labels or vocabulary file, stripped."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: cannot read it: {error}") from None


@dataclass(frozen=True)
class LoadedSlot:
    name: str
    manifest: Path
    entry: SlotEntry
    models: Mapping[str, TFLiteModel]
    files: Mapping[str, Path]

    def error(self, problem: str) -> ModelError:
        """An error about this slot, with the command that regenerates it."""
        return ModelError(f"{self.manifest}: slots.{self.name}: {problem}; regenerate it with: {self.entry.command}")

    def model(self, role: str) -> TFLiteModel:
        if role not in self.models:
            raise self.error(f"no {role!r} model (family {self.entry.family} needs one)")
        return self.models[role]

    def lines(self, role: str) -> list[str]:
        """The non-empty lines of data file ``role`` (labels, vocabulary), stripped."""
        if role not in self.files:
            raise self.error(f"no {role!r} file (family {self.entry.family} needs one)")
        return read_lines(self.files[role])

    def param(self, key: str, kind: type, expected: str) -> Any:
        """Family parameter ``key``, checked to be of ``kind``."""
        reader = FieldReader(self.manifest, f"slots.{self.name}.params", self.entry.params)
        return reader.get(key, kind, expected)

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        """Family parameter ``key``, one of ``options``."""
        expected = " or ".join(repr(option) for option in options)
        value: str = self.param(key, str, expected)
        if value not in options:
            raise self.error(f"params.{key} is {value!r}, expected {expected}")
        return value

    def check_shape(self, tensor: TensorInfo, model: TFLiteModel, wanted: str, ok: bool) -> None:
        """Raise unless ``ok``: ``tensor`` of ``model`` should be ``wanted``."""
        if not ok:
            raise self.error(f"{model.path.name}: tensor {tensor.name!r} is {tensor.describe()}, expected {wanted}")


def signature_of(model: TFLiteModel) -> dict[str, dict[str, TensorSpec]]:
    """The model's tensors as the manifest records them: {"inputs": {name: spec}, "outputs": {...}}."""
    return {
        "inputs": {n: TensorSpec(t.shape, t.dtype.name) for n, t in model.inputs.items()},
        "outputs": {n: TensorSpec(t.shape, t.dtype.name) for n, t in model.outputs.items()},
    }


def load_slot(folder: Path, manifest: Path, name: str, entry: SlotEntry, threads: int) -> LoadedSlot:
    """Verify every file of the slot against the manifest and load its models."""
    files = {role: verify_file(folder, entry, data) for role, data in entry.files.items()}
    models = {}
    for role, model_file in entry.models.items():
        path = verify_file(folder, entry, model_file)
        try:
            model = TFLiteModel(path, threads)
        except ModelError as error:
            raise ModelError(f"{error}; regenerate it with: {entry.command}") from None
        check_signature(path, entry, model_file, signature_of(model))
        models[role] = model
    return LoadedSlot(name, manifest, entry, models, files)
