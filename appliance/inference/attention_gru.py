"""Family ``attention-gru``: a CNN encoder and an attention + GRU step decoder.

Encoder: input [1, H, W, 3] RGB scaled to 0..1 (the whole frame, stretched), output features
[1, L, D]. Decoder, one token per invoke, tensors bound by name (their order in the file is not
the Keras order): inputs ``features`` [1, L, D], ``token`` (int32, one element) and ``hidden``
[1, U]; outputs ``logits`` [1, V] and ``new_hidden`` [1, U]. The hidden state starts at zero.
With int8 I/O the hidden input and output have different scales, so the state is carried as
real values and quantized afresh at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.inference.captioner import (
    Caption,
    Captioner,
    CaptionerSettings,
    Step,
    beam_search,
    log_softmax,
    mean_of_readings,
    mirrored,
    side_swap,
)
from appliance.inference.imaging import Image, PixelEncoder, stretch
from appliance.inference.model import FloatArray, TFLiteModel
from appliance.inference.settings import InferenceSettings
from appliance.inference.slot import LoadedSlot

PIXEL_RANGE = (0.0, 1.0)
DECODER_INPUTS = ("features", "hidden", "token")
DECODER_OUTPUTS = ("logits", "new_hidden")


class AttentionGruCaptioner(Captioner):
    def __init__(
        self,
        encoder: TFLiteModel,
        decoder: TFLiteModel,
        vocabulary: list[str],
        start_token: str,
        end_token: str,
        max_length: int,
        settings: CaptionerSettings,
    ) -> None:
        self._encoder = encoder
        self._decoder = decoder
        self.vocabulary = tuple(vocabulary)
        self.start = vocabulary.index(start_token)
        self.end = vocabulary.index(end_token)
        self.max_length = max_length
        self.settings = settings
        self._swap = side_swap(vocabulary)
        self._image = encoder.only_input()
        self._encoded = encoder.only_output()
        self._features = decoder.inputs["features"]
        self._token = decoder.inputs["token"]
        self._hidden = decoder.inputs["hidden"]
        self._logits = decoder.outputs["logits"]
        self._new_hidden = decoder.outputs["new_hidden"]
        _, height, width, _ = self._image.shape
        self.input_size = (width, height)
        self._pixels = PixelEncoder(self._image, PIXEL_RANGE)

    @classmethod
    def from_slot(cls, slot: LoadedSlot, settings: InferenceSettings) -> AttentionGruCaptioner:
        encoder, decoder = slot.model("encoder"), slot.model("decoder")
        vocabulary = slot.lines("vocab")
        start = slot.param("start_token", str, "the start token, a word of the vocabulary")
        end = slot.param("end_token", str, "the end token, a word of the vocabulary")
        max_length = slot.param("max_length", int, "the longest caption in tokens, at least 1")
        for name, token in (("start_token", start), ("end_token", end)):
            if token not in vocabulary:
                raise slot.error(f"params.{name} {token!r} is not in the vocabulary file")
        if max_length < 1:
            raise slot.error(f"params.max_length is {max_length}, expected at least 1")
        if sorted(decoder.inputs) != sorted(DECODER_INPUTS) or sorted(decoder.outputs) != sorted(DECODER_OUTPUTS):
            found = f"{', '.join(decoder.inputs)} -> {', '.join(decoder.outputs)}"
            wanted = f"{', '.join(DECODER_INPUTS)} -> {', '.join(DECODER_OUTPUTS)}"
            raise slot.error(f"{decoder.path.name}: the decoder's tensors are {found}, expected {wanted}")
        image, encoded = encoder.only_input(), encoder.only_output()
        features, hidden = decoder.inputs["features"], decoder.inputs["hidden"]
        logits, new_hidden = decoder.outputs["logits"], decoder.outputs["new_hidden"]
        token = decoder.inputs["token"]
        slot.check_shape(image, encoder, "[1, H, W, 3]", len(image.shape) == 4 and image.shape[3] == 3)
        slot.check_shape(
            features, decoder, f"the encoder's output shape {encoded.shape}", features.shape == encoded.shape
        )
        slot.check_shape(token, decoder, "one int32", token.dtype == np.int32 and int(np.prod(token.shape)) == 1)
        slot.check_shape(
            new_hidden, decoder, f"the hidden input's shape {hidden.shape}", new_hidden.shape == hidden.shape
        )
        slot.check_shape(
            logits,
            decoder,
            f"[1, {len(vocabulary)}] (one per word of the vocabulary)",
            logits.shape == (1, len(vocabulary)),
        )
        return cls(encoder, decoder, vocabulary, start, end, max_length, settings.captioner)

    @property
    def models(self) -> Mapping[str, TFLiteModel]:
        return {"encoder": self._encoder, "decoder": self._decoder}

    def encode(self, rgb: Image) -> npt.NDArray[Any]:
        """The features of a frame stretched to the encoder's input, quantized for the decoder's
        ``features`` input."""
        self._encoder.set_raw(self._image, self._pixels.encode(rgb))
        self._encoder.invoke()
        features = self._encoded.dequantize(self._encoder.get_raw(self._encoded))
        return self._features.quantize(features)

    def _reading(self, features: npt.NDArray[Any]) -> Step[FloatArray]:
        """The decoder step over one reading's features; the state is the hidden state."""

        def step(token: int, hidden: FloatArray) -> tuple[FloatArray, FloatArray]:
            decoder = self._decoder
            decoder.set_raw(self._features, features)
            decoder.set_raw(self._token, np.array([token], np.int32))
            decoder.set_raw(self._hidden, self._hidden.quantize(hidden))
            decoder.invoke()
            logits = self._logits.dequantize(decoder.get_raw(self._logits))[0]
            return log_softmax(logits), self._new_hidden.dequantize(decoder.get_raw(self._new_hidden))

        return step

    def caption(self, frame: Image) -> Caption:
        rgb = stretch(frame, *self.input_size)  # once: the mirror image is the same pixels reversed
        readings = [self._reading(self.encode(rgb))]
        if self.settings.mirror:
            readings.append(mirrored(self._reading(self.encode(np.ascontiguousarray(rgb[:, ::-1]))), self._swap))
        initial = np.zeros(self._hidden.shape, np.float32)
        tokens, logprob = beam_search(
            mean_of_readings(readings),
            tuple(initial for _ in readings),
            self.start,
            self.end,
            self.max_length,
            self.settings.beam_width,
            self.settings.length_penalty,
        )
        words = [self.vocabulary[t] for t in tokens if t not in (self.start, self.end)]
        return Caption(" ".join(words), tokens, logprob / max(len(tokens), 1))
