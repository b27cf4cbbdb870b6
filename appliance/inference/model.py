"""A TFLite model with named, quantization-aware inputs and outputs.

Tensors are named by the model's signature where it has one (what the toolchain writes: the
Keras input and output names), else by the tensor names. Every input is quantized and every
output dequantized with that tensor's own scale and zero point, read from the model; nothing
about them is assumed, so int8, uint8 and float models all go through the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.inference.runtime import make_interpreter

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor: where it is and how its integers map to real values."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float  # 0.0 when the tensor is not quantized
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def quantize(self, real: npt.ArrayLike) -> npt.NDArray[Any]:
        """``real`` in this tensor's dtype: q = round(real / scale) + zero_point, saturated."""
        if not self.quantized:
            same: npt.NDArray[Any] = np.asarray(real, dtype=self.dtype)
            return same
        scaled = np.asarray(real, dtype=np.float32) / np.float32(self.scale)
        # Round half away from zero, as TFLite's own quantize kernel does.
        q = np.trunc(scaled + np.copysign(np.float32(0.5), scaled)) + self.zero_point
        limits = np.iinfo(self.dtype)
        quantized: npt.NDArray[Any] = np.clip(q, limits.min, limits.max).astype(self.dtype)
        return quantized

    def dequantize(self, raw: npt.NDArray[Any]) -> FloatArray:
        """Real values of ``raw``: (q - zero_point) * scale."""
        if not self.quantized:
            return raw.astype(np.float32, copy=False)
        return (raw.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def describe(self) -> str:
        """Shape and type for tables, e.g. ``1x320x320x3 int8``."""
        return "x".join(map(str, self.shape)) + f" {self.dtype.name}"


def _tensor_info(name: str, details: Mapping[str, Any], path: Path) -> TensorInfo:
    params = details.get("quantization_parameters", {})
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    zero_points = np.asarray(params.get("zero_points", []), dtype=np.int64)
    if scales.size > 1:
        raise ModelError(f"{path}: tensor {name!r} is quantized per channel, which model inputs and outputs may not be")
    dtype = np.dtype(details["dtype"])
    quantized = scales.size == 1 and float(scales[0]) != 0.0 and dtype.kind in "iu"
    return TensorInfo(
        name=name,
        index=int(details["index"]),
        shape=tuple(int(n) for n in details["shape"]),
        dtype=dtype,
        scale=float(scales[0]) if quantized else 0.0,
        zero_point=int(zero_points[0]) if quantized else 0,
    )


class TFLiteModel:
    """One ``.tflite`` file loaded into an interpreter, with named tensors."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self.threads = threads
        try:
            self._interpreter = make_interpreter(str(path), threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            reason = " ".join(str(error).split())
            raise ModelError(f"{path}: the TFLite runtime cannot load it: {reason}") from None
        self.inputs, self.outputs = self._named_tensors()

    def _named_tensors(self) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
        interpreter = self._interpreter
        signatures = interpreter.get_signature_list()
        if signatures:
            # The serving signature carries the names the model was built with.
            runner = interpreter.get_signature_runner(next(iter(signatures)))
            input_details = runner.get_input_details().items()
            output_details = runner.get_output_details().items()
        else:
            input_details = ((d["name"], d) for d in interpreter.get_input_details())
            output_details = ((d["name"], d) for d in interpreter.get_output_details())
        inputs = {name: _tensor_info(name, d, self.path) for name, d in input_details}
        outputs = {name: _tensor_info(name, d, self.path) for name, d in output_details}
        return inputs, outputs

    def only_input(self) -> TensorInfo:
        return self._only(self.inputs, "input")

    def only_output(self) -> TensorInfo:
        return self._only(self.outputs, "output")

    def _only(self, tensors: Mapping[str, TensorInfo], what: str) -> TensorInfo:
        if len(tensors) != 1:
            raise ModelError(f"{self.path}: expected one {what} tensor, found {len(tensors)}: {', '.join(tensors)}")
        return next(iter(tensors.values()))

    def set_raw(self, tensor: TensorInfo, raw: npt.NDArray[Any]) -> None:
        """Copy already-quantized ``raw`` into input ``tensor``."""
        self._interpreter.set_tensor(tensor.index, raw.reshape(tensor.shape))

    def get_raw(self, tensor: TensorInfo) -> npt.NDArray[Any]:
        """A copy of output ``tensor`` as stored (quantized where the model is)."""
        result: npt.NDArray[Any] = self._interpreter.get_tensor(tensor.index)
        return result

    def invoke(self) -> None:
        try:
            self._interpreter.invoke()
        except RuntimeError as error:
            raise ModelError(f"{self.path}: the model failed to run: {' '.join(str(error).split())}") from None

    def set_zero_inputs(self) -> None:
        """Set every input to real zero (a valid token index, a blank image), e.g. to time an invoke."""
        for tensor in self.inputs.values():
            self.set_raw(tensor, tensor.quantize(np.zeros(tensor.shape, np.float32)))

    def run(self, real_inputs: Mapping[str, npt.ArrayLike]) -> dict[str, FloatArray]:
        """Quantize ``real_inputs`` by name, invoke, and return every output dequantized."""
        for name, value in real_inputs.items():
            tensor = self.inputs[name]
            self.set_raw(tensor, tensor.quantize(value))
        self.invoke()
        return {name: tensor.dequantize(self.get_raw(tensor)) for name, tensor in self.outputs.items()}
