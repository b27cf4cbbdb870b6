"""Train a small person detector whose output follows the yolov8 contract, on a COCO detection set.

The network is a compact anchor-free YOLO: a strided CNN, a top-down feature pyramid and a head
at strides 8, 16 and 32 predicting edge distances and class scores per anchor, decoded in the
graph. Anchors are assigned by centre sampling on the levels whose scale fits the object;
anchors inside ``iscrowd`` regions are left out of the loss. Images are letterboxed with the
appliance's own letterbox, so training sees what the appliance will feed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from appliance.inference.imaging import letterbox
from tools.convert.datasets import DetectionSet, read_image
from tools.convert.layers import AnchorDecode, anchor_grid
from tools.convert.progress import progress
from tools.convert.training import EpochProgress, fast_batchnorm, start_training

STRIDES = (8, 16, 32)
# an object goes to the levels whose range holds its longer side (input pixels)
LEVEL_RANGES = {8: (0.0, 64.0), 16: (32.0, 128.0), 32: (64.0, 1e9)}
CENTRE_RADIUS = 2.5  # strides around the box centre where anchors may be positive


@dataclass(frozen=True)
class DetectorRecipe:
    size: tuple[int, int] = (320, 320)  # input width and height, multiples of 32 (the design's default: 320)
    epochs: int = 30
    batch: int = 32
    learning_rate: float = 2e-3
    width: float = 1.0  # channel multiplier
    depth: int = 1  # residual blocks at each of the strides 8, 16 and 32
    seed: int = 0


def _conv(x: tf.Tensor, filters: int, stride: int = 1, kernel: int = 3) -> tf.Tensor:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def _residual(x: tf.Tensor, filters: int) -> tf.Tensor:
    return keras.layers.Add()([x, _conv(_conv(x, filters // 2, kernel=1), filters)])


def build_detector(classes: int, size: tuple[int, int], width: float = 1.0, depth: int = 1) -> keras.Model:
    """About 250 k parameters at width 1 and depth 1; ReLU, which int8 kernels fuse into the convolutions."""

    def c(n: int) -> int:
        return max(8, int(n * width))

    def stage(x: tf.Tensor, filters: int) -> tf.Tensor:
        x = _conv(x, filters, 2)
        for _ in range(depth):
            x = _residual(x, filters)
        return x

    images = keras.Input((size[1], size[0], 3), name="images")
    x = _conv(_conv(images, c(16), 2), c(32), 2)
    p3 = stage(x, c(48))
    p4 = stage(p3, c(64))
    p5 = stage(p4, c(96))
    n5 = _conv(p5, c(48), kernel=1)
    n4 = keras.layers.Add()([_conv(p4, c(48), kernel=1), keras.layers.UpSampling2D()(n5)])
    n3 = keras.layers.Add()([_conv(p3, c(48), kernel=1), keras.layers.UpSampling2D()(n4)])
    maps = [
        keras.layers.Conv2D(4 + classes, 1, bias_initializer=_head_bias(classes))(_conv(n, c(48))) for n in (n3, n4, n5)
    ]
    return keras.Model(images, AnchorDecode(STRIDES, size)(maps), name="detector")


def _head_bias(classes: int) -> keras.initializers.Initializer:
    # scores start near 1 %: most anchors are background (the usual prior for dense detectors)
    return keras.initializers.Constant(np.array([0.0] * 4 + [-4.6] * classes, np.float32))


def assign(
    boxes: npt.NDArray[np.float32],
    classes: npt.NDArray[np.intp],
    ignore: npt.NDArray[np.bool_],
    centres: npt.NDArray[np.float32],
    strides: npt.NDArray[np.float32],
    size: tuple[int, int],
    class_count: int,
) -> npt.NDArray[np.float32]:
    """Targets [4 + C + 2, N] for one letterboxed image of ``size`` (width, height): box (cx, cy, w, h
    in 0..1 of the input's width and height), class one-hot, positive mask, learn mask (0 for anchors
    inside an ignored region)."""
    unit = np.array([size[0], size[1]] * 2, np.float32)[:, None]
    target = np.zeros((4 + class_count + 2, len(centres)), np.float32)
    target[-1] = 1.0
    owner_area = np.full(len(centres), np.inf, np.float32)
    for box, cls, skip in zip(boxes, classes, ignore, strict=True):
        x1, y1, x2, y2 = box
        inside = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
        if skip:
            target[-1, inside & (target[-2] == 0)] = 0.0
            continue
        longest = max(x2 - x1, y2 - y1)
        fits = np.zeros(len(centres), bool)
        for stride, (low, high) in LEVEL_RANGES.items():
            if low <= longest < high:
                fits |= strides == stride
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
        offset = np.abs(centres - centre)
        near = (offset <= CENTRE_RADIUS * strides[:, None]).all(axis=1)
        # anchors close to the centre count even just outside a thin box, so small people get several
        close = (offset <= strides[:, None]).all(axis=1)
        chosen = fits & ((near & inside) | close)
        if not chosen.any():  # a thin or small object: the anchor nearest its centre, on a fitting level
            candidates = np.flatnonzero(fits) if fits.any() else np.arange(len(centres))
            chosen[candidates[np.argmin(np.abs(centres[candidates] - centre).sum(axis=1))]] = True
        area = (x2 - x1) * (y2 - y1)
        chosen &= area < owner_area  # an anchor claimed twice goes to the smaller object
        owner_area[chosen] = area
        target[:4, chosen] = np.array([[centre[0], centre[1], x2 - x1, y2 - y1]], np.float32).T / unit
        target[4 : 4 + class_count, chosen] = 0.0
        target[4 + cls, chosen] = 1.0
        target[-2, chosen] = 1.0
        target[-1, chosen] = 1.0
    return target


def _xyxy(boxes: tf.Tensor) -> tuple[tf.Tensor, ...]:
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


# Registered so that a saved detector loads with its training configuration, too.
@keras.saving.register_keras_serializable(package="appliance")  # type: ignore[untyped-decorator]
def detector_loss(truth: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
    """GIoU on the boxes of positive anchors; binary cross-entropy on the scores, whose target at a
    positive anchor is the IoU its box reached (at least 0.3): well-placed boxes learn to outrank
    near-misses, which is what NMS and average precision reward."""
    positive, learn = truth[:, -2, :], truth[:, -1, :]
    count = tf.maximum(tf.reduce_sum(positive), 1.0)
    px1, py1, px2, py2 = _xyxy(prediction[:, :4, :])
    tx1, ty1, tx2, ty2 = _xyxy(truth[:, :4, :])
    width = tf.maximum(tf.minimum(px2, tx2) - tf.maximum(px1, tx1), 0)
    inter = width * tf.maximum(tf.minimum(py2, ty2) - tf.maximum(py1, ty1), 0)
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
    iou = inter / tf.maximum(union, 1e-9)
    hull = (tf.maximum(px2, tx2) - tf.minimum(px1, tx1)) * (tf.maximum(py2, ty2) - tf.minimum(py1, ty1))
    giou = iou - (hull - union) / tf.maximum(hull, 1e-9)
    box = tf.reduce_sum((1.0 - giou) * positive) / count
    quality = tf.stop_gradient(tf.clip_by_value(iou, 0.3, 1.0))
    labels = truth[:, 4:-2, :] * quality[:, None, :]
    scores = tf.clip_by_value(prediction[:, 4:, :], 1e-6, 1 - 1e-6)
    bce = -(labels * tf.math.log(scores) + (1 - labels) * tf.math.log(1 - scores))
    classification = tf.reduce_sum(bce * learn[:, None, :]) / count
    return classification + 5.0 * box


def flip_order(size: tuple[int, int]) -> npt.NDArray[np.int32]:
    """The anchor permutation of a horizontally mirrored image of ``size`` (width, height): for each
    anchor, the one of its level at the mirrored centre, looked up in ``anchor_grid``'s own layout."""
    centres, strides = anchor_grid(size, STRIDES)
    # centres are odd multiples of half a stride, exact in float32, so they serve as keys
    index = {(s, x, y): i for i, ((x, y), s) in enumerate(zip(centres.tolist(), strides.tolist(), strict=True))}
    mirrored = [index[(s, size[0] - x, y)] for (x, y), s in zip(centres.tolist(), strides.tolist(), strict=True)]
    return np.asarray(mirrored, np.int32)


def prepare(data: DetectionSet, size: tuple[int, int]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Images letterboxed to ``size`` (width, height), RGB, and their targets, in memory."""
    centres, strides = anchor_grid(size, STRIDES)
    images = np.empty((len(data.samples), size[1], size[0], 3), np.uint8)
    targets = np.empty((len(data.samples), 4 + len(data.names) + 2, len(centres)), np.float32)
    for i, sample in enumerate(progress(iterable=data.samples, desc="letterboxing")):
        rgb, layout = letterbox(read_image(sample.path), *size)
        images[i] = rgb
        boxes = sample.boxes * layout.scale + np.array([layout.pad_x, layout.pad_y] * 2, np.float32)
        targets[i] = assign(boxes, sample.classes, sample.ignore, centres, strides, size, len(data.names))
    return images, targets


def _scaled(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(images, tf.float32) / 255.0, targets


def _augmented(images: tf.Tensor, targets: tf.Tensor, order: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror half the batch; jitter brightness and contrast; scale pixels to 0..1.

    The mirror is applied to the uint8 images, before they become four times larger floats.
    """
    count = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([count], seed) < 0.5
    mirrored = tf.gather(targets, order, axis=2)
    mirrored = tf.concat([1.0 - mirrored[:, :1], mirrored[:, 1:]], axis=1)
    targets = tf.where(flip[:, None, None], mirrored, targets)
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    gain = tf.random.stateless_uniform([count, 1, 1, 1], seed + 1, 0.75 / 255.0, 1.25 / 255.0)
    shift = tf.random.stateless_uniform([count, 1, 1, 1], seed + 2, -0.08, 0.08)
    return tf.clip_by_value(tf.cast(images, tf.float32) * gain + shift, 0.0, 1.0), targets


def train_detector(data: DetectionSet, recipe: DetectorRecipe) -> keras.Model:
    start_training(recipe.seed)
    images, targets = prepare(data, recipe.size)
    held = np.arange(len(images)) % 20 == 19  # 5 % for the validation loss
    order = tf.constant(flip_order(recipe.size))
    steps = int(np.ceil((~held).sum() / recipe.batch))

    def gather(rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(lambda r: (images[r], targets[r]), [rows], [tf.uint8, tf.float32], stateful=False)
        return tf.ensure_shape(x, (None, *images.shape[1:])), tf.ensure_shape(y, (None, *targets.shape[1:]))

    def batches(rows: npt.NDArray[np.intp], augment: bool) -> tf.data.Dataset:
        """Batches gathered by row from the arrays in memory: the data set is never copied (as tensor
        slices, and the training and validation parts, it was held three times)."""
        dataset = tf.data.Dataset.from_tensor_slices(rows)
        if augment:
            dataset = dataset.shuffle(len(rows), seed=recipe.seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(recipe.batch).enumerate()
        if augment:
            seed = tf.constant(recipe.seed, tf.int64)
            dataset = dataset.map(lambda i, r: _augmented(*gather(r), order, tf.stack([i, seed])))
        else:
            dataset = dataset.map(lambda _, r: _scaled(*gather(r)))
        return dataset  # no prefetch: on two cores it competes with training and halves its speed

    model = fast_batchnorm(build_detector(len(data.names), recipe.size, recipe.width, recipe.depth))
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps * recipe.epochs, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=detector_loss)
    model.fit(
        batches(np.flatnonzero(~held), augment=True),
        validation_data=batches(np.flatnonzero(held), augment=False),
        epochs=recipe.epochs,
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
        callbacks=[EpochProgress("training detector", recipe.epochs)],
    )
    return model
