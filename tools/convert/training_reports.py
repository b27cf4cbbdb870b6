"""The reports the classifier and captioner trainers end with: float and int8 measured on what training held out.

Both models are run by the appliance's own family classes (float from the float models folder,
int8 from the models folder), so the figures are what the appliance will do, not what Keras did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2

from appliance.inference.captioner import Captioner
from appliance.inference.classifier import Classifier
from appliance.inference.imaging import Box
from appliance.inference.loader import CAPTIONERS, CLASSIFIERS, build_slot
from appliance.inference.manifest import read_manifest
from appliance.inference.settings import InferenceSettings
from tools.convert.datasets import read_image
from tools.convert.evaluate import evaluate_classifier, multi_reference_bleu
from tools.convert.progress import progress
from tools.convert.report import conversion_figures, examples_table, write_report
from tools.convert.slots import Agreement
from tools.convert.train_classifier import TrainedClassifier


def _classifiers(float_models: Path, out: Path, threads: int) -> dict[str, Classifier]:
    settings = InferenceSettings(threads=threads)
    folders = {"float": float_models, "int8": out}
    return {name: build_slot(read_manifest(f), "classifier", CLASSIFIERS, settings) for name, f in folders.items()}


def _captioners(float_models: Path, out: Path, threads: int) -> dict[str, Captioner]:
    settings = InferenceSettings(threads=threads)
    folders = {"float": float_models, "int8": out}
    return {name: build_slot(read_manifest(f), "captioner", CAPTIONERS, settings) for name, f in folders.items()}


def classifier_report(
    out: Path, float_models: Path, trained: TrainedClassifier, agreement: Agreement, command: str, threads: int
) -> Path:
    crops = trained.crops
    held = [i for i in range(len(crops.labels)) if trained.held_out[i]]
    size = float(crops.images.shape[1])
    whole: Box = (0.0, 0.0, size, size)  # the crop is the person's square already
    figures = conversion_figures("classifier", command, agreement)
    figures.title = "classifier: training, float and int8"
    accuracy: dict[str, dict[str, float]] = {}
    for name, model in _classifiers(float_models, out, threads).items():
        examples = [
            (cv2.cvtColor(crops.images[i], cv2.COLOR_RGB2BGR), whole, model.labels[crops.labels[i]]) for i in held
        ]
        metrics = evaluate_classifier(model, examples, len(examples))
        accuracy[name] = {"all": metrics.accuracy, **metrics.per_label}
        figures.summary.append(f"held-out accuracy, {name}: {metrics.accuracy:.1%} on {metrics.crops} crops")
    figures.summary.insert(
        2,
        f"Training: {len(crops.labels)} person crops from {crops.frames} images and video frames "
        f"({crops.empty_frames} with nobody found), {int(trained.held_out.sum())} held out; "
        f"{len(trained.losses)} epochs.",
    )
    figures.bars = {"held-out accuracy per label": accuracy}
    figures.curves = {key: [epoch.get(key, float("nan")) for epoch in trained.losses] for key in ("loss", "val_loss")}
    return write_report(out, "classifier", figures)[0]


def captioner_report(
    out: Path,
    float_models: Path,
    held_out: Sequence[tuple[Path, Sequence[str]]],
    losses: Sequence[tuple[float, float]],
    agreement: Agreement,
    command: str,
    threads: int,
) -> Path:
    """BLEU-1..4 of float and int8 on the held-out images against all their reference captions."""
    figures = conversion_figures("captioner", command, agreement)
    figures.title = "captioner: training, float and int8"
    references = [[caption.split() for caption in captions] for _, captions in held_out]
    said: dict[str, list[str]] = {}
    bleu: dict[str, dict[str, float]] = {}
    for name, model in _captioners(float_models, out, threads).items():
        said[name] = [model.caption(read_image(path)).text for path, _ in progress(iterable=held_out, desc=name)]
        hypotheses = [text.split() for text in said[name]]
        bleu[name] = {f"BLEU-{n}": multi_reference_bleu(references, hypotheses, n) for n in range(1, 5)}
        scores = ", ".join(f"{k} {v:.3f}" for k, v in bleu[name].items())
        figures.summary.append(f"held-out {name}: {scores} ({len(held_out)} images)")
    figures.bars = {"BLEU on held-out images": bleu}
    figures.curves = {"loss": [t for t, _ in losses], "val_loss": [v for _, v in losses]}
    rows = [
        {"image": path.name, "reference": captions[0], "float": said["float"][i], "int8": said["int8"][i]}
        for i, (path, captions) in enumerate(held_out[:8])
    ]
    figures.tables.append(examples_table("Held-out examples", rows))
    return write_report(out, "captioner", figures)[0]
