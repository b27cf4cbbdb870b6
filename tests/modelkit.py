"""Small models of the real architectures, trained for seconds on the toy scenes.

- a detector with a YOLO-style head (two strides, box distances and class scores per anchor,
  decoded in the graph) whose output follows the yolov8 contract [1, 4 + C, N], boxes
  normalised to 0..1 as Ultralytics' TFLite export writes them;
- a Keras MobileNetV2 (``weights=None``, alpha 0.35) classifier of person crops;
- a CNN encoder and a Bahdanau-attention GRU step decoder.

Each is fed exactly as the appliance feeds it (the appliance's letterbox, crop and pixel
functions), so that what the tests assert about the converted models is meaningful.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from appliance.inference import attention_gru, mobilenetv2, yolov8
from appliance.inference.imaging import Letterbox, letterbox, pixel_values, square_crop, stretch
from tests.toyworld import CLASSIFIER_LABELS, DETECTOR_LABELS, VOCABULARY, Scene

DETECTOR_SIZE = 128
DETECTOR_STRIDES = (8, 16)
CLASSIFIER_SIZE = 48
CLASSIFIER_MARGIN = 0.15
ENCODER_SIZE = 64
CAPTION_LENGTH = 9  # <start> + at most 7 words + <end>
CAPTION_HIDDEN = 64


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _fast_batchnorm(model: keras.Model) -> keras.Model:
    """Moving statistics that settle within a few hundred steps (Keras' MobileNetV2 uses 0.999)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


class AnchorDecode(keras.layers.Layer):  # type: ignore[misc]
    """Per-level raw maps [B, H, W, 4 + C] -> [B, 4 + C, N]: cx, cy, w, h (in 0..1, or in input
    pixels with ``pixels``, as an ONNX export has them), then class scores."""

    def __init__(self, strides: tuple[int, ...], size: int, pixels: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.strides, self.size = strides, size
        self.unit = 1.0 if pixels else float(size)
        centres = []
        for stride in strides:
            cells = size // stride
            ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
            centres.append(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1) * stride)
        self.centres = np.concatenate(centres).astype(np.float32)  # [N, 2] input pixels
        self.scales = np.concatenate([np.full((size // s) ** 2, s, np.float32) for s in strides])[:, None]  # [N, 1]

    def call(self, maps: list[tf.Tensor]) -> tf.Tensor:
        flat = keras.ops.concatenate([keras.ops.reshape(m, (-1, m.shape[1] * m.shape[2], m.shape[3])) for m in maps], 1)
        distances = keras.ops.softplus(flat[..., :4]) * self.scales  # left, top, right, bottom
        top_left = self.centres - distances[..., :2]
        bottom_right = self.centres + distances[..., 2:4]
        centre = (top_left + bottom_right) / (2.0 * self.unit)
        extent = (bottom_right - top_left) / self.unit
        scores = keras.ops.sigmoid(flat[..., 4:])
        return keras.ops.transpose(keras.ops.concatenate([centre, extent, scores], -1), (0, 2, 1))


def _conv(x: tf.Tensor, filters: int, stride: int = 1) -> tf.Tensor:
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    return keras.layers.Activation("swish")(x)


def build_detector(pixels: bool = False) -> keras.Model:
    classes = len(DETECTOR_LABELS)
    images = keras.Input((DETECTOR_SIZE, DETECTOR_SIZE, 3), name="images")
    x = _conv(images, 16, 2)
    x = _conv(x, 24, 2)
    p3 = _conv(_conv(x, 32, 2), 32)
    p4 = _conv(_conv(p3, 48, 2), 48)
    maps = [keras.layers.Conv2D(4 + classes, 1)(_conv(p, 32)) for p in (p3, p4)]
    return keras.Model(images, AnchorDecode(DETECTOR_STRIDES, DETECTOR_SIZE, pixels)(maps), name="detector")


def with_pixel_boxes(detector: keras.Model) -> keras.Model:
    """The same trained detector, its boxes in input pixels instead of 0..1."""
    twin = build_detector(pixels=True)
    twin.set_weights(detector.get_weights())
    return twin


def _detector_targets(scene: Scene, layout: Letterbox, centres: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[4 + C + 1, N]: box (cx, cy, w, h in 0..1), class one-hot, and a positive-anchor mask."""
    classes = len(DETECTOR_LABELS)
    target = np.zeros((4 + classes + 1, len(centres)), np.float32)
    for thing in sorted(scene.things, key=lambda t: -(t.box[2] - t.box[0]) * (t.box[3] - t.box[1])):
        x1, y1, x2, y2 = (np.array(thing.box, np.float32) * layout.scale) + [layout.pad_x, layout.pad_y] * 2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        near = np.abs(centres - [cx, cy]).max(axis=1) <= np.maximum(scales[:, 0] * 1.0, 0)
        inside = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
        chosen = near & inside
        if not chosen.any():
            chosen[np.argmin(np.abs(centres - [cx, cy]).sum(axis=1))] = True
        target[:4, chosen] = np.array([[cx, cy, x2 - x1, y2 - y1]], np.float32).T / DETECTOR_SIZE
        target[4 : 4 + classes, chosen] = 0
        target[4 + DETECTOR_LABELS.index(thing.label), chosen] = 1
        target[-1, chosen] = 1
    return target


def _detector_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    mask = y_true[:, -1, :]
    positives = keras.ops.sum(mask) + 1.0
    scores = keras.ops.clip(y_pred[:, 4:, :], 1e-6, 1 - 1e-6)
    truth = y_true[:, 4:-1, :]
    bce = -(truth * keras.ops.log(scores) * 4.0 + (1 - truth) * keras.ops.log(1 - scores))
    box = keras.ops.sum(keras.ops.abs(y_pred[:, :4, :] - y_true[:, :4, :]), axis=1) * mask
    return (keras.ops.sum(bce) + 20.0 * keras.ops.sum(box)) / positives


def detector_inputs(scenes: list[Scene]) -> tuple[np.ndarray, list[Letterbox]]:
    images, layouts = [], []
    for scene in scenes:
        rgb, layout = letterbox(scene.image, DETECTOR_SIZE, DETECTOR_SIZE)
        images.append(pixel_values(rgb, yolov8.PIXEL_RANGE))
        layouts.append(layout)
    return np.stack(images), layouts


def train_detector(scenes: list[Scene], epochs: int) -> keras.Model:
    model = build_detector()
    decode = model.layers[-1]
    assert isinstance(decode, AnchorDecode)
    x, layouts = detector_inputs(scenes)
    targets = [
        _detector_targets(s, layout, decode.centres, decode.scales) for s, layout in zip(scenes, layouts, strict=True)
    ]
    y = np.stack(targets)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=_detector_loss)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def classifier_crops(scenes: list[Scene]) -> tuple[np.ndarray, np.ndarray]:
    crops, labels = [], []
    for scene in scenes:
        for person in scene.people:
            crop = square_crop(scene.image, person.fbox, CLASSIFIER_MARGIN, CLASSIFIER_SIZE)
            crops.append(pixel_values(crop, mobilenetv2.PIXEL_RANGE))
            labels.append(CLASSIFIER_LABELS.index("violence" if person.colour == "red" else "normal"))
    return np.stack(crops), np.array(labels)


def train_classifier(scenes: list[Scene], epochs: int) -> keras.Model:
    model = _fast_batchnorm(
        keras.applications.MobileNetV2(
            input_shape=(CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3), alpha=0.35, weights=None, classes=len(CLASSIFIER_LABELS)
        )
    )
    x, y = classifier_crops(scenes)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def build_captioner(
    features: int = 32, hidden: int = CAPTION_HIDDEN, attention: int = 32
) -> tuple[keras.Model, keras.Model]:
    image = keras.Input((ENCODER_SIZE, ENCODER_SIZE, 3), name="image")
    x = _conv(image, 16, 2)
    x = _conv(x, 24, 2)
    x = _conv(x, features, 2)  # 8 x 8 grid
    encoder = keras.Model(image, keras.layers.Reshape((-1, features))(x), name="encoder")

    feats = keras.Input((encoder.output.shape[1], features), name="features")
    token = keras.Input((1,), dtype="int32", name="token")
    state = keras.Input((hidden,), name="hidden")
    # Bahdanau attention: score_i = v . tanh(W1 f_i + W2 h)
    keys = keras.layers.Dense(attention)(feats)
    query = keras.layers.Reshape((1, attention))(keras.layers.Dense(attention)(state))
    scores = keras.layers.Dense(1)(keras.layers.Activation("tanh")(keras.layers.Add()([keys, query])))
    weights = keras.layers.Softmax(axis=1)(scores)
    context = keras.layers.Reshape((features,))(keras.layers.Dot(axes=1)([weights, feats]))
    embedded = keras.layers.Reshape((16,))(keras.layers.Embedding(len(VOCABULARY), 16)(token))
    output, new_state = keras.layers.GRUCell(hidden)(keras.layers.Concatenate()([embedded, context]), [state])
    logits = keras.layers.Dense(len(VOCABULARY), name="logits")(keras.layers.Concatenate()([output, context]))
    new_hidden = keras.layers.Identity(name="new_hidden")(new_state[0] if isinstance(new_state, list) else new_state)
    decoder = keras.Model(
        {"features": feats, "token": token, "hidden": state},
        {"logits": logits, "new_hidden": new_hidden},
        name="decoder",
    )
    return encoder, decoder


def caption_tokens(caption: str) -> list[int]:
    words = ["<start>", *caption.split(), "<end>"]
    ids = [VOCABULARY.index(w) for w in words]
    return ids + [VOCABULARY.index("<pad>")] * (CAPTION_LENGTH - len(ids))


def encoder_images(scenes: list[Scene]) -> np.ndarray:
    return np.stack(
        [pixel_values(stretch(s.image, ENCODER_SIZE, ENCODER_SIZE), attention_gru.PIXEL_RANGE) for s in scenes]
    )


def train_captioner(scenes: list[Scene], epochs: int) -> tuple[keras.Model, keras.Model]:
    encoder, decoder = build_captioner()
    images = encoder_images(scenes)
    sequences = np.array([caption_tokens(s.caption) for s in scenes], np.int32)
    variables = encoder.trainable_variables + decoder.trainable_variables
    optimizer = keras.optimizers.Adam(5e-3)
    pad = VOCABULARY.index("<pad>")

    @tf.function  # type: ignore[untyped-decorator]
    def train_step(batch_images: tf.Tensor, batch_tokens: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            features = encoder(batch_images, training=True)
            hidden = tf.zeros((tf.shape(batch_images)[0], CAPTION_HIDDEN))
            total, count = 0.0, 0.0
            for t in range(CAPTION_LENGTH - 1):
                out = decoder(
                    {"features": features, "token": batch_tokens[:, t : t + 1], "hidden": hidden}, training=True
                )
                hidden = out["new_hidden"]
                target = batch_tokens[:, t + 1]
                mask = tf.cast(target != pad, tf.float32)
                loss = keras.losses.sparse_categorical_crossentropy(target, out["logits"], from_logits=True)
                total += tf.reduce_sum(loss * mask)
                count += tf.reduce_sum(mask)
            mean = total / count
        optimizer.apply_gradients(zip(tape.gradient(mean, variables), variables, strict=True))
        return mean

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(scenes))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            train_step(tf.constant(images[batch]), tf.constant(sequences[batch]))
    return encoder, decoder


def export_saved_model(model: keras.Model, folder: Path) -> Path:
    """A SavedModel with a batch-1 serving signature, as ``tools.convert`` makes from a .keras file."""
    spec = keras.tree.map_structure(lambda t: tf.TensorSpec((1, *t.shape[1:]), t.dtype, name=t.name), model.input)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.__call__, input_signature=[spec])
    archive.write_out(str(folder), verbose=False)
    return folder
