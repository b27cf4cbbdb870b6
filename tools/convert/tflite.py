"""Keras or SavedModel to TFLite: float, and full-integer with a representative dataset.

Measured with TensorFlow 2.21 / Keras 3: a model exported through ``keras.export.ExportArchive``
and converted with ``TFLiteConverter.from_saved_model`` calibrates; a ``tf.Module`` or a frozen
concrete function did not. The representative dataset yields dicts keyed by the signature's
input names (a list fails with a RESHAPE error on multi-input models).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.convert import ConvertError
from tools.convert.progress import captured_native_output, progress

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IO_TYPES = ("int8", "uint8", "float")
Sample = dict[str, np.ndarray]


def _tf() -> Any:
    with captured_native_output():
        import tensorflow as tf
    return tf


def as_saved_model(source: Path, workdir: Path) -> Path:
    """A SavedModel folder with a serving signature for ``source`` (a ``.keras`` file or a SavedModel).

    Keras models are exported with batch size 1 and the Keras input and output names, which
    become the names the appliance binds tensors by.
    """
    if source.is_dir():
        if not (source / "saved_model.pb").is_file():
            raise ConvertError(f"{source}: a folder, but not a SavedModel (no saved_model.pb)")
        return source
    if source.suffix not in (".keras", ".h5"):
        raise ConvertError(f"{source}: expected a Keras model (.keras) or a SavedModel folder")
    if not source.is_file():
        raise ConvertError(f"{source}: no such file")
    _tf()
    import keras

    import tools.convert.layers  # noqa: F401  (registers the toolchain's own layers for loading)

    with captured_native_output():
        try:
            model = keras.models.load_model(source, compile=False)
        except Exception as error:
            raise ConvertError(f"{source}: Keras cannot load it: {error}") from None
    return export_saved_model(model, workdir / f"{source.stem}.savedmodel", str(source))


def export_saved_model(model: Any, target: Path, source: str = "the model") -> Path:
    """``model`` as a SavedModel with a batch-1 serving signature named by its Keras inputs and outputs."""
    tf = _tf()
    import keras

    def spec(tensor: Any) -> Any:
        if any(size is None for size in tensor.shape[1:]):
            raise ConvertError(f"{source}: input {tensor.name!r} has shape {tensor.shape}; give it a fixed size")
        return tf.TensorSpec((1, *tensor.shape[1:]), tensor.dtype, name=tensor.name)

    with captured_native_output():
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", model.__call__, input_signature=[keras.tree.map_structure(spec, model.input)])
        archive.write_out(str(target), verbose=False)
    return target


def convert(
    saved_model: Path,
    out: Path,
    representative: Sequence[Sample] | None = None,
    io: str = "int8",
) -> None:
    """Write ``out``: float TFLite, or full-integer int8 calibrated on ``representative`` with ``io`` I/O."""
    tf = _tf()
    with captured_native_output():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if representative is not None:
            samples = list(representative)

            def dataset() -> Iterator[Sample]:
                with progress(total=len(samples), desc=f"calibrating {out.name}") as bar:
                    for sample in samples:
                        yield sample
                        bar.update()

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}[io]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
        try:
            data = converter.convert()
        except Exception as error:
            reason = " ".join(str(error).split())[:500]
            raise ConvertError(f"{saved_model}: TFLite conversion failed: {reason}") from None
    out.write_bytes(data)


def tensorflow_version() -> str:
    return str(_tf().__version__)
