"""Train a slot's model on a data set, save it, and convert it like any trained model.

What ``python -m tools.convert detector|classifier|captioner`` run, and what the reference
command runs on the synthetic data sets. With ``resume``, a model already trained in the work
folder (and a conversion already made) is kept, so an interrupted run goes on where it stopped.
The classifier and the captioner end with a report of their own (SLOT-report.md and .png in the
models folder): the float and the int8 model measured on what training held out (per-label
accuracy; BLEU-1..4 and caption examples) and the losses per epoch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from appliance.inference.manifest import Domain
from tools.convert.datasets import CROP_MARGIN
from tools.convert.pipeline import Request, run
from tools.convert.slots import Agreement, CaptionerConversion, ClassifierConversion, DetectorConversion, SlotConversion
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
    domain: Domain | None = None  # what the models are trained on (the manifest's domain)


def _convert(
    to: Destination,
    conversion: SlotConversion,
    sources: dict[str, Path],
    data: dict[str, Path],
    calib: Path,
    report: bool = True,
) -> tuple[str, Agreement | None]:
    """The conversion's summary, and its agreement when it ran now (None when resumed)."""
    marker = to.work / f"{conversion.slot}.converted"
    if to.resume and marker.exists():
        return str(json.loads(marker.read_text())["summary"]), None
    done = run(
        Request(
            conversion,
            sources,
            data,
            calib,
            to.calib_frames,
            to.out,
            "int8",
            to.threads,
            to.command,
            to.float_out,
            report=report,
            domain=to.domain,
        )
    )
    marker.write_text(json.dumps({"summary": done.agreement.summary, "metrics": done.agreement.metrics}))
    return done.agreement.summary, done.agreement


def _fresh(to: Destination, slot: str) -> bool:
    """Whether the slot's model must be trained (then its old conversion no longer counts)."""
    to.work.mkdir(parents=True, exist_ok=True)
    trained = to.work / f"{slot}.trained"
    if to.resume and trained.exists():
        return False
    (to.work / f"{slot}.converted").unlink(missing_ok=True)
    return True


def detector(
    coco: Path,
    images: Path,
    recipe: DetectorRecipe,
    to: Destination,
    calib: Path | None = None,
    negatives: Sequence[Path] = (),
) -> str:
    """Train on the COCO file ``coco`` and, as background, the images of the ``negatives`` folders."""
    from tools.convert.datasets import DetectionSet, read_coco_detection, read_negatives
    from tools.convert.train_detector import train_detector

    model, labels = to.work / "detector.keras", to.work / "detector_labels.txt"
    if _fresh(to, "detector"):
        data = read_coco_detection(coco, images)
        data = DetectionSet(data.names, data.samples + [s for folder in negatives for s in read_negatives(folder)])
        train_detector(data, recipe).save(model)
        labels.write_text("\n".join(data.names) + "\n")
        (to.work / "detector.trained").touch()
    return _convert(
        to, DetectorConversion(("person",), (), "auto"), {"model": model}, {"labels": labels}, calib or images
    )[0]


def _measured(to: Destination) -> Destination:
    """``to`` with the float models published too (to ``work/float-models`` unless named), to measure both."""
    return to if to.float_out is not None else replace(to, float_out=to.work / "float-models")


def classifier(
    dataset: Path, recipe: ClassifierRecipe, to: Destination, calib: Path | None = None, detector: Path | None = None
) -> str:
    """Train on ``dataset`` (a folder per label of images and videos; persons found by the detector slot
    of the models folder ``detector`` when given), convert, and report."""
    from tools.convert.crops import load_person_detector
    from tools.convert.datasets import read_label_folders
    from tools.convert.train_classifier import train_classifier

    model, labels = to.work / "classifier.keras", to.work / "classifier_labels.txt"
    crops_folder = to.work / "classifier-crops"
    trained = None
    if _fresh(to, "classifier"):
        data = read_label_folders(dataset)
        trained = train_classifier(data, recipe, load_person_detector(detector) if detector else None)
        trained.model.save(model)
        labels.write_text("\n".join(data.labels) + "\n")
        _write_crops(crops_folder, trained.crops.images, to.calib_frames)
        (to.work / "classifier.trained").touch()
    to = _measured(to)
    conversion = ClassifierConversion(CROP_MARGIN, "probabilities")
    summary, agreement = _convert(to, conversion, {"model": model}, {"labels": labels}, calib or crops_folder, False)
    if trained is not None and agreement is not None:
        from tools.convert.training_reports import classifier_report

        classifier_report(to.out, to.float_out or to.out, trained, agreement, to.command, to.threads)
    return summary


def _write_crops(folder: Path, crops: npt.NDArray[np.uint8], count: int) -> None:
    """A sample of the training crops, spread over them: what conversion calibrates on by default."""
    import cv2

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in np.unique(np.linspace(0, len(crops) - 1, min(count, len(crops))).round().astype(int)):
        cv2.imwrite(str(folder / f"crop{i:06d}.png"), cv2.cvtColor(crops[i], cv2.COLOR_RGB2BGR))


def captioner(captions: Path, images: Path, recipe: CaptionerRecipe, to: Destination, calib: Path | None = None) -> str:
    from tools.convert.datasets import read_coco_captions
    from tools.convert.train_captioner import train_captioner

    encoder, decoder, vocab = to.work / "encoder.keras", to.work / "decoder.keras", to.work / "captioner_vocab.txt"
    pairs = read_coco_captions(captions, images)
    trained = None
    if _fresh(to, "captioner"):
        trained = train_captioner(pairs, recipe)
        trained.encoder.save(encoder)
        trained.decoder.save(decoder)
        vocab.write_text("\n".join(trained.vocabulary) + "\n")
        (to.work / "captioner.losses.json").write_text(json.dumps(trained.losses))
        (to.work / "captioner.trained").touch()
    to = _measured(to)
    conversion = CaptionerConversion("<start>", "<end>", recipe.max_length)
    sources, data = {"encoder": encoder, "decoder": decoder}, {"vocab": vocab}
    summary, agreement = _convert(to, conversion, sources, data, calib or images, False)
    if trained is not None and agreement is not None:
        from tools.convert.training_reports import captioner_report

        held = [pairs[i] for i in trained.held_out]
        captioner_report(to.out, to.float_out or to.out, held, trained.losses, agreement, to.command, to.threads)
    return summary
