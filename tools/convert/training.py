"""What the trainers share: progress per epoch, batch normalisation that settles in short runs."""

from __future__ import annotations

from typing import Any

import keras

from tools.convert.progress import progress


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
