"""Train a slot's model on a data set, save it, and convert it like any trained model.

What ``python -m tools.convert detector|classifier|captioner`` run, and what the reference
command runs on the synthetic data sets. With ``resume``, a model already trained in the work
folder (and a conversion already made) is kept, so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tools.convert.datasets import CROP_MARGIN
from tools.convert.pipeline import Request, run
from tools.convert.slots import CaptionerConversion, ClassifierConversion, DetectorConversion, SlotConversion
from tools.convert.train_captioner import CaptionerRecipe
from tools.convert.train_classifier import ClassifierRecipe
from tools.convert.train_detector import DetectorRecipe


@dataclass(frozen=True)
class Destination:
    work: Path  # trained Keras models, labels, marks of finished steps
    out: Path  # the models folder to update
    command: str  # the command recorded in the manifest to regenerate the slot
    calib_frames: int = 300
    float_out: Path | None = None
    resume: bool = False
    threads: int = 2


def _convert(
    to: Destination, conversion: SlotConversion, sources: dict[str, Path], data: dict[str, Path], calib: Path
) -> str:
    marker = to.work / f"{conversion.slot}.converted"
    if to.resume and marker.exists():
        return str(json.loads(marker.read_text())["summary"])
    report = run(
        Request(conversion, sources, data, calib, to.calib_frames, to.out, "int8", to.threads, to.command, to.float_out)
    )
    marker.write_text(json.dumps({"summary": report.agreement.summary, "metrics": report.agreement.metrics}))
    return report.agreement.summary


def _fresh(to: Destination, slot: str) -> bool:
    """Whether the slot's model must be trained (then its old conversion no longer counts)."""
    to.work.mkdir(parents=True, exist_ok=True)
    trained = to.work / f"{slot}.trained"
    if to.resume and trained.exists():
        return False
    (to.work / f"{slot}.converted").unlink(missing_ok=True)
    return True


def detector(coco: Path, images: Path, recipe: DetectorRecipe, to: Destination, calib: Path | None = None) -> str:
    from tools.convert.datasets import read_coco_detection
    from tools.convert.train_detector import train_detector

    model, labels = to.work / "detector.keras", to.work / "detector_labels.txt"
    if _fresh(to, "detector"):
        data = read_coco_detection(coco, images)
        train_detector(data, recipe).save(model)
        labels.write_text("\n".join(data.names) + "\n")
        (to.work / "detector.trained").touch()
    return _convert(to, DetectorConversion("person", "auto"), {"model": model}, {"labels": labels}, calib or images)


def classifier(dataset: Path, recipe: ClassifierRecipe, to: Destination, calib: Path | None = None) -> str:
    from tools.convert.datasets import read_label_folders
    from tools.convert.train_classifier import train_classifier

    model, labels = to.work / "classifier.keras", to.work / "classifier_labels.txt"
    if _fresh(to, "classifier"):
        data = read_label_folders(dataset)
        train_classifier(data, recipe).save(model)
        labels.write_text("\n".join(data.labels) + "\n")
        (to.work / "classifier.trained").touch()
    conversion = ClassifierConversion(CROP_MARGIN, "probabilities")
    return _convert(to, conversion, {"model": model}, {"labels": labels}, calib or dataset)


def captioner(captions: Path, images: Path, recipe: CaptionerRecipe, to: Destination, calib: Path | None = None) -> str:
    from tools.convert.datasets import read_coco_captions
    from tools.convert.train_captioner import train_captioner

    encoder, decoder, vocab = to.work / "encoder.keras", to.work / "decoder.keras", to.work / "captioner_vocab.txt"
    if _fresh(to, "captioner"):
        trained = train_captioner(read_coco_captions(captions, images), recipe)
        trained.encoder.save(encoder)
        trained.decoder.save(decoder)
        vocab.write_text("\n".join(trained.vocabulary) + "\n")
        (to.work / "captioner.losses.json").write_text(json.dumps(trained.losses))
        (to.work / "captioner.trained").touch()
    conversion = CaptionerConversion("<start>", "<end>", recipe.max_length)
    return _convert(to, conversion, {"encoder": encoder, "decoder": decoder}, {"vocab": vocab}, calib or images)
