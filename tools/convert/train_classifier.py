"""Train a MobileNetV2 classifier of person crops on a folder with one subfolder per label.

Crops are made with the appliance's own square crop (the whole image is the box), scaled to -1..1
as MobileNetV2 expects; rare labels weigh more; flips, small rotations, brightness and colour
shifts augment; training stops early when the validation loss stops falling.
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

from appliance.inference.imaging import square_crop
from tools.convert.datasets import LabelledImages, read_image
from tools.convert.progress import progress
from tools.convert.training import EpochProgress, fast_batchnorm


@dataclass(frozen=True)
class ClassifierRecipe:
    size: int = 96
    alpha: float = 0.35
    epochs: int = 12
    batch: int = 64
    learning_rate: float = 2e-3
    patience: int = 3  # epochs without a better validation loss before stopping
    weights: Path | None = None  # ImageNet weights of MobileNetV2 (an .h5 file), else from scratch
    seed: int = 0


def prepare(data: LabelledImages, size: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    images = np.empty((len(data.samples), size, size, 3), np.uint8)
    for i, (path, _) in enumerate(progress(iterable=data.samples, desc="cropping")):
        image = read_image(path)
        images[i] = square_crop(image, (0.0, 0.0, float(image.shape[1]), float(image.shape[0])), 0.0, size)
    return images, np.array([label for _, label in data.samples], np.int32)


def build_classifier(classes: int, recipe: ClassifierRecipe) -> keras.Model:
    base = keras.applications.MobileNetV2(
        input_shape=(recipe.size, recipe.size, 3),
        alpha=recipe.alpha,
        include_top=False,
        weights=str(recipe.weights) if recipe.weights else None,
        pooling="avg",
    )
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


def train_classifier(data: LabelledImages, recipe: ClassifierRecipe) -> keras.Model:
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    images, labels = prepare(data, recipe.size)
    held = np.arange(len(images)) % 10 == 9
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
    model.fit(
        train,
        validation_data=validation,
        epochs=recipe.epochs,
        shuffle=False,  # the dataset shuffles itself
        class_weight=weights,
        verbose=0,
        callbacks=[stop, EpochProgress("training classifier", recipe.epochs)],
    )
    return model
