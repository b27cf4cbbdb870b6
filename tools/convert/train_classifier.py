"""Train a MobileNetV2 classifier of person crops on a folder with one subfolder per label.

The subfolders hold images and videos (every ``frame_step``-th frame is used). With a detector,
each person it finds becomes a crop (tools/convert/crops.py); without one, each image or frame is
a crop already. Crops are the appliance's own square crop, scaled to -1..1 as MobileNetV2
expects; one file in ten is held out for validation (one crop in ten when there are fewer than
ten files), so frames of one video do not sit on both sides; rare labels weigh more; flips,
small rotations, brightness and colour shifts augment; training stops early when the validation
loss stops falling and keeps the best epoch. ImageNet weights come from a file when given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from appliance.inference.detector import Detector
from tools.convert import ConvertError
from tools.convert.crops import Crops, person_crops
from tools.convert.datasets import LabelledImages
from tools.convert.training import EpochProgress, fast_batchnorm, start_training


@dataclass(frozen=True)
class ClassifierRecipe:
    size: int = 96
    alpha: float = 0.35
    epochs: int = 12
    batch: int = 64
    learning_rate: float = 2e-3
    patience: int = 3  # epochs without a better validation loss before stopping
    weights: Path | None = None  # ImageNet weights of MobileNetV2 (an .h5 file), else from scratch
    frame_step: int = 5  # every k-th frame of a video
    seed: int = 0


@dataclass
class TrainedClassifier:
    model: keras.Model
    crops: Crops
    held_out: npt.NDArray[np.bool_]  # (N,) the crops validation held out
    losses: list[dict[str, float]]  # per epoch: loss, val_loss


def held_out_crops(crops: Crops) -> npt.NDArray[np.bool_]:
    """Every tenth file's crops, or every tenth crop when there are fewer than ten files."""
    files = int(crops.sources.max()) + 1
    keys = crops.sources if files >= 10 else np.arange(len(crops.labels))
    return np.asarray(keys % 10 == 9)


def build_classifier(classes: int, recipe: ClassifierRecipe) -> keras.Model:
    if recipe.weights is not None and not recipe.weights.is_file():
        raise ConvertError(f"{recipe.weights}: no such file (fetch it: python -m tools.convert fetch)")
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(recipe.size, recipe.size, 3),
            alpha=recipe.alpha,
            include_top=False,
            weights=str(recipe.weights) if recipe.weights else None,
            pooling="avg",
        )
    except (ValueError, OSError) as error:
        raise ConvertError(
            f"{recipe.weights}: not MobileNetV2 ImageNet weights without the top for alpha {recipe.alpha}: {error}"
        ) from None
    scores = keras.layers.Dense(classes, activation="softmax", name="scores")(keras.layers.Dropout(0.2)(base.output))
    return fast_batchnorm(keras.Model(base.input, scores, name="classifier"))


def _augmented(images: tf.Tensor, seed: tf.Tensor, rotate: keras.layers.Layer) -> tf.Tensor:
    count = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([count], seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    pixels = tf.cast(images, tf.float32)
    pixels = rotate(pixels, training=True)
    gain = tf.random.stateless_uniform([count, 1, 1, 1], seed + 1, 0.7, 1.3)
    colour = tf.random.stateless_uniform([count, 1, 1, 3], seed + 2, 0.9, 1.1)
    shift = tf.random.stateless_uniform([count, 1, 1, 1], seed + 3, -20.0, 20.0)
    pixels = tf.clip_by_value(pixels * gain * colour + shift, 0.0, 255.0)
    return pixels / 127.5 - 1.0


def train_classifier(
    data: LabelledImages, recipe: ClassifierRecipe, detector: Detector | None = None
) -> TrainedClassifier:
    start_training(recipe.seed)
    crops = person_crops(data, recipe.size, recipe.frame_step, detector)
    images, labels = crops.images, crops.labels
    held = held_out_crops(crops)
    counts = np.bincount(labels[~held], minlength=len(data.labels)).astype(np.float64)
    weights = {i: float(counts.sum() / (len(counts) * max(c, 1.0))) for i, c in enumerate(counts)}
    rotate = keras.layers.RandomRotation(0.03, fill_mode="constant", fill_value=114.0, seed=recipe.seed)
    seed = tf.constant(recipe.seed, tf.int64)
    train = (
        tf.data.Dataset.from_tensor_slices((images[~held], labels[~held]))
        .shuffle(int((~held).sum()), seed=recipe.seed)
        .batch(recipe.batch)
        .enumerate()
        .map(lambda i, b: (_augmented(b[0], tf.stack([i, seed]), rotate), b[1]))
    )
    validation = tf.data.Dataset.from_tensor_slices((images[held], labels[held])).batch(recipe.batch)
    validation = validation.map(lambda x, y: (tf.cast(x, tf.float32) / 127.5 - 1.0, y))
    model = build_classifier(len(data.labels), recipe)
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss="sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(patience=recipe.patience, restore_best_weights=True)
    epochs = EpochProgress("training classifier", recipe.epochs)
    model.fit(
        train,
        validation_data=validation,
        epochs=recipe.epochs,
        shuffle=False,  # the dataset shuffles itself
        class_weight=weights,
        verbose=0,
        callbacks=[stop, epochs],
    )
    return TrainedClassifier(model, crops, held, epochs.losses)
