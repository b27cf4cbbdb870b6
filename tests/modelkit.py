"""Small models of the real architectures for the tests, made by the toolchain's own trainers.

The toy scenes are written as the toolchain's data sets (COCO detection with persons and bags,
person crops per label, COCO captions) and trained on with small recipes: a yolov8-contract
detector, a MobileNetV2 classifier and an attention-GRU captioner, each converted to int8 by the
toolchain. Only what the toolchain has no use for is here: a detector twin whose boxes are in
input pixels.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from tools.convert.layers import AnchorDecode
from tools.convert.train_captioner import CaptionerRecipe
from tools.convert.train_classifier import ClassifierRecipe
from tools.convert.train_detector import DetectorRecipe

# the toy frames are 160x120: the detector takes their shape, so the tests run a non-square input end to end
DETECTOR = DetectorRecipe(size=(160, 128), epochs=12, batch=32)
CLASSIFIER = ClassifierRecipe(size=48, epochs=4, batch=32, patience=2)
CAPTIONER = CaptionerRecipe(
    width=128,
    height=96,
    stem=2,
    features=32,
    attention=32,
    hidden=64,
    embedding=16,
    max_length=8,
    epochs=24,
    batch=32,
    patience=4,
)


def with_pixel_boxes(detector: keras.Model) -> keras.Model:
    """The same detector with cx, cy, w, h in input pixels, as an ONNX export has them."""
    head = detector.layers[-1]
    assert isinstance(head, AnchorDecode)
    return keras.Model(detector.input, AnchorDecode(head.strides, head.size, pixels=True)(head.input))
