"""What the trainers share: a repeatable start, progress per epoch, batch normalisation that settles in short runs."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tools.convert.progress import progress


def start_training(seed: int) -> None:
    """The same start for every training, whatever the process did before: Keras's automatic layer
    names begin again (they end up in the converted files, so a model trained after another one in
    the same process would otherwise differ from one trained alone), then the seeds and op
    determinism are set."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """A progress bar over epochs, showing the training and validation loss."""

    def __init__(self, description: str, epochs: int) -> None:
        super().__init__()
        self.description, self.epochs = description, epochs
        self.losses: list[dict[str, float]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.bar = progress(total=self.epochs, desc=self.description)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items() if "loss" in key}
        self.losses.append(values)
        self.bar.set_postfix({key: f"{value:.4f}" for key, value in values.items()})
        self.bar.update()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.bar.close()


def fast_batchnorm(model: keras.Model, momentum: float = 0.9) -> keras.Model:
    """Moving statistics that settle within a few hundred steps (Keras' MobileNetV2 uses 0.999,
    which leaves inference-mode statistics far behind after a short training)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model
