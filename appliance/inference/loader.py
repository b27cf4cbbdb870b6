"""Builds the model slots named in the manifest, each through its family's class.

The registries below are the one place where families are listed: a new family is one file
with one class, added to its slot's registry here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from appliance.errors import ModelError
from appliance.inference.attention_gru import AttentionGruCaptioner
from appliance.inference.captioner import Captioner
from appliance.inference.classifier import Classifier
from appliance.inference.detector import Detector
from appliance.inference.manifest import Manifest, read_manifest
from appliance.inference.mobilenetv2 import MobileNetV2Classifier
from appliance.inference.settings import InferenceSettings
from appliance.inference.slot import LoadedSlot, load_slot
from appliance.inference.yolov8 import Yolov8Detector

log = logging.getLogger(__name__)

T = TypeVar("T")
Family = Callable[[LoadedSlot, InferenceSettings], T]

DETECTORS: dict[str, Family[Detector]] = {"yolov8": Yolov8Detector.from_slot}
CLASSIFIERS: dict[str, Family[Classifier]] = {"mobilenetv2": MobileNetV2Classifier.from_slot}
CAPTIONERS: dict[str, Family[Captioner]] = {"attention-gru": AttentionGruCaptioner.from_slot}


@dataclass(frozen=True)
class Models:
    """The loaded slots; a slot absent from the manifest is None."""

    manifest: Manifest
    detector: Detector | None
    classifier: Classifier | None
    captioner: Captioner | None

    def slots(self) -> dict[str, Detector | Classifier | Captioner]:
        present = {"detector": self.detector, "classifier": self.classifier, "captioner": self.captioner}
        return {name: slot for name, slot in present.items() if slot is not None}


def build_slot(manifest: Manifest, name: str, families: Mapping[str, Family[T]], settings: InferenceSettings) -> T:
    """Verify, load and build slot ``name`` of ``manifest`` with its family from ``families``."""
    entry = manifest.slots[name]
    if entry.family not in families:
        raise ModelError(
            f"{manifest.path}: slots.{name}.family: unknown family {entry.family!r}; "
            f"this appliance knows {', '.join(sorted(families))}"
        )
    loaded = load_slot(manifest.folder, manifest.path, name, entry, settings.threads)
    slot = families[entry.family](loaded, settings)
    log.info("model %s: %s, %s, from %s", name, entry.family, entry.quantization, manifest.folder)
    if entry.domain is None:
        log.warning(
            "model %s: the manifest does not say what it was trained on (an older toolchain): it is validated for "
            "no camera, so its findings raise no alert; regenerate it with: %s",
            name,
            entry.command,
        )
    return slot


def load_models(folder: Path, settings: InferenceSettings) -> Models:
    """Every slot of ``folder/manifest.json``, verified against it and loaded."""
    manifest = read_manifest(folder)

    def build(name: str, families: Mapping[str, Family[T]]) -> T | None:
        return build_slot(manifest, name, families, settings) if name in manifest.slots else None

    return Models(
        manifest, build("detector", DETECTORS), build("classifier", CLASSIFIERS), build("captioner", CAPTIONERS)
    )
