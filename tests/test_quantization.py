"""Quantizing inputs and dequantizing outputs with each tensor's own scale and zero point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from appliance.inference.imaging import PixelEncoder, pixel_values
from appliance.inference.model import TensorInfo

scales = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)


def tensor(dtype: str, scale: float, zero_point: int, shape: tuple[int, ...] = (1, 4, 4, 3)) -> TensorInfo:
    return TensorInfo("t", 0, shape, np.dtype(dtype), scale, zero_point)


@given(scale=scales, zero_point=st.integers(-128, 127), data=st.data())
def test_int8_round_trip_is_within_half_a_step_inside_the_range(
    scale: float, zero_point: int, data: st.DataObject
) -> None:
    t = tensor("int8", scale, zero_point)
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    real = np.clip(data.draw(hnp.arrays(np.float64, 16, elements=st.floats(low, high))).astype(np.float32), low, high)
    back = t.dequantize(t.quantize(real))
    assert np.all(np.abs(back - real) <= scale / 2 + 1e-5 * max(1.0, abs(low), abs(high)))


@given(scale=scales, zero_point=st.integers(0, 255), value=st.floats(-1e6, 1e6))
def test_uint8_saturates_outside_its_range(scale: float, zero_point: int, value: float) -> None:
    q = tensor("uint8", scale, zero_point).quantize(np.array([value], np.float32))
    assert q.dtype == np.uint8
    exact = round(value / scale) + zero_point
    if exact < 0:
        assert q[0] == 0
    elif exact > 255:
        assert q[0] == 255
    else:  # float32 arithmetic may round a half step the other way
        assert abs(int(q[0]) - exact) <= 1


def test_quantize_rounds_half_away_from_zero_like_tflite() -> None:
    t = tensor("int8", 0.5, 0)
    assert t.quantize(np.array([0.25, -0.25, 0.75, -0.75], np.float32)).tolist() == [1, -1, 2, -2]


def test_values_use_the_tensors_own_zero_point() -> None:
    a, b = tensor("int8", 0.1, -128), tensor("int8", 0.1, 5)
    assert a.quantize(np.array([0.0], np.float32))[0] == -128
    assert b.quantize(np.array([0.0], np.float32))[0] == 5
    assert b.dequantize(np.array([15], np.int8))[0] == pytest.approx(1.0)


def test_float_tensors_pass_through() -> None:
    t = tensor("float32", 0.0, 0)
    real = np.array([0.123, -4.5], np.float32)
    assert not t.quantized
    np.testing.assert_array_equal(t.dequantize(t.quantize(real)), real)


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point", "pixel_range"),
    [
        ("int8", 1 / 255, -128, (0.0, 1.0)),  # the usual detector input: q = pixel - 128
        ("int8", 2 / 255, 0, (-1.0, 1.0)),  # MobileNetV2's -1..1
        ("int8", 0.0123, 7, (0.0, 1.0)),  # an odd calibration: nothing assumed
        ("uint8", 1 / 255, 0, (0.0, 1.0)),
        ("float32", 0.0, 0, (-1.0, 1.0)),
    ],
)
def test_pixel_encoder_table_equals_quantizing_every_pixel(
    dtype: str, scale: float, zero_point: int, pixel_range: tuple[float, float]
) -> None:
    t = tensor(dtype, scale, zero_point)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    encoded = PixelEncoder(t, pixel_range).encode(rgb)
    assert encoded.shape == t.shape
    assert encoded.dtype == t.dtype
    np.testing.assert_array_equal(encoded, t.quantize(pixel_values(rgb, pixel_range)).reshape(t.shape))
