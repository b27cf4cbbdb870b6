"""Train the captioner, an encoder and an attention-GRU step decoder, on a COCO captions file.

The encoder turns the whole frame (stretched to its input, 0..1) into a grid of feature vectors
and one summary vector of the whole frame, appended as a last cell; the decoder, one token per
call, attends over the cells (Bahdanau) with its hidden state, feeds the attended features and the
previous word to a GRU cell and scores the next word. Training uses teacher forcing on whole
captions, plus an auxiliary loss: from the summary cell alone, which words the caption holds. A
soft attention averages cells, so without it the encoder learns to count people or notice a knife
only through the decoder's loss, slowly; the auxiliary head is training-only (not exported).
Frames are brightened or darkened at random, and half of them mirrored unless their caption
speaks of left or right. The encoder's first layer takes whole 4x4 patches, so its 384x288
input (a knife is 1 to 2 px at 192x144) costs about what a 192x144 one did. The learning rate
decays on a cosine. The vocabulary keeps the most frequent words with <pad>, <start>, <end> and
<unk>. One image in twenty is held out, with all its captions: for the validation loss (early
stopping keeps the best epoch) and for BLEU-1..4 of the float and int8 models after conversion
(tools/convert/train.py).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from appliance.inference.captioner import SIDES
from appliance.inference.imaging import stretch
from tools.convert.datasets import read_image
from tools.convert.progress import progress
from tools.convert.training import fast_batchnorm, start_training

SPECIAL = ("<pad>", "<start>", "<end>", "<unk>")


@dataclass(frozen=True)
class CaptionerRecipe:
    width: int = 384
    height: int = 288
    # The first layer's kernel and stride: it sees whole patches of stem x stem pixels, so a fine
    # input (a knife is 1 to 2 px wide at 192x144) costs little more than a coarse one.
    stem: int = 4
    features: int = 96  # per grid cell
    attention: int = 96
    hidden: int = 192
    embedding: int = 64
    vocabulary: int = 5000  # most words kept
    max_length: int = 16  # tokens of a caption, the end token included
    epochs: int = 20
    batch: int = 64
    learning_rate: float = 3e-3  # at the start; a cosine takes it to a tenth by the last epoch
    word_loss: float = 1.0  # weight of the auxiliary loss (mean binary cross-entropy over the vocabulary)
    # Epochs without a better validation loss before stopping early. The held-out twentieth is
    # small and its loss jumps between epochs (3 stopped a run after 7 of 20), so the default
    # runs every epoch and keeps the best.
    patience: int = 20
    seed: int = 0


def build_vocabulary(captions: Sequence[str], size: int) -> list[str]:
    counts = Counter(word for caption in captions for word in caption.split())
    words = sorted(counts, key=lambda w: (-counts[w], w))[: max(0, size - len(SPECIAL))]
    return [*SPECIAL, *words]


def tokens(caption: str, vocabulary: Sequence[str], max_length: int) -> list[int]:
    """<start>, the words (unknown ones as <unk>), <end>, padded to max_length + 1."""
    index = {word: i for i, word in enumerate(vocabulary)}
    words = caption.split()[: max_length - 1]
    ids = [index["<start>"], *(index.get(w, index["<unk>"]) for w in words), index["<end>"]]
    return ids + [index["<pad>"]] * (max_length + 1 - len(ids))


def _conv(x: tf.Tensor, filters: int, stride: int = 1, kernel: int = 3) -> tf.Tensor:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def build_encoder(recipe: CaptionerRecipe) -> keras.Model:
    """Image [1, H, W, 3] in 0..1 to features [1, H/S/8 * W/S/8 + 1, D] (S the stem's stride): the grid,
    then the summary cell."""
    image = keras.Input((recipe.height, recipe.width, 3), name="image")
    x = _conv(image, 32, recipe.stem, kernel=recipe.stem)
    x = _conv(_conv(x, 32, 2), 32)
    x = _conv(_conv(x, 64, 2), 64)
    x = _conv(_conv(x, recipe.features, 2), recipe.features)
    grid = keras.layers.Reshape((-1, recipe.features))(x)
    summary = keras.layers.Dense(recipe.features, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
    summary = keras.layers.Reshape((1, recipe.features))(summary)
    features = keras.layers.Concatenate(axis=1, name="features")([grid, summary])
    return fast_batchnorm(keras.Model(image, features, name="encoder"))


def build_decoder(cells: int, words: int, recipe: CaptionerRecipe) -> keras.Model:
    """One step: features, previous token, hidden state -> logits of the next token, new hidden state."""
    features = keras.Input((cells, recipe.features), name="features")
    token = keras.Input((1,), dtype="int32", name="token")
    hidden = keras.Input((recipe.hidden,), name="hidden")
    keys = keras.layers.Dense(recipe.attention)(features)
    query = keras.layers.Reshape((1, recipe.attention))(keras.layers.Dense(recipe.attention)(hidden))
    scores = keras.layers.Dense(1)(keras.layers.Activation("tanh")(keras.layers.Add()([keys, query])))
    weights = keras.layers.Softmax(axis=1)(scores)
    context = keras.layers.Reshape((recipe.features,))(keras.layers.Dot(axes=1)([weights, features]))
    embedded = keras.layers.Reshape((recipe.embedding,))(keras.layers.Embedding(words, recipe.embedding)(token))
    output, state = keras.layers.GRUCell(recipe.hidden)(keras.layers.Concatenate()([embedded, context]), [hidden])
    new_state = state[0] if isinstance(state, list | tuple) else state
    logits = keras.layers.Dense(words, name="logits")(keras.layers.Concatenate()([output, context]))
    return keras.Model(
        {"features": features, "token": token, "hidden": hidden},
        {"logits": logits, "new_hidden": keras.layers.Identity(name="new_hidden")(new_state)},
        name="decoder",
    )


def prepare(
    pairs: Sequence[tuple[Path, Sequence[str]]], recipe: CaptionerRecipe
) -> tuple[npt.NDArray[np.uint8], list[str], list[int]]:
    """Stretched RGB images, and every caption with the index of its image."""
    images = np.empty((len(pairs), recipe.height, recipe.width, 3), np.uint8)
    texts, owners = [], []
    for i, (path, captions) in enumerate(progress(iterable=pairs, desc="resizing")):
        images[i] = stretch(read_image(path), recipe.width, recipe.height)
        texts += list(captions)
        owners += [i] * len(captions)
    return images, texts, owners


@dataclass
class Captioner:
    encoder: keras.Model
    decoder: keras.Model
    vocabulary: list[str]
    losses: list[tuple[float, float]]  # (training, validation) per epoch
    held_out: list[int]  # the images (indices into the pairs trained on) validation held out


def held_out_images(count: int) -> list[int]:
    """One image in twenty, with all its captions: the validation loss and the BLEU evaluation."""
    return [i for i in range(count) if i % 20 == 19]


def sided_words(vocabulary: Sequence[str]) -> tf.Tensor:
    """Which tokens say left or right: a caption holding one does not survive mirroring."""
    return tf.constant([word in SIDES for word in vocabulary])


def augmented(images: tf.Tensor, batch_tokens: tf.Tensor, sided: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Training pixels (0..1) of uint8 frames: brightened or darkened at random, and half of them
    mirrored, except those whose caption holds a ``sided`` token (a mirrored scene keeps its caption
    otherwise: twice the scenes)."""
    count = tf.shape(images)[0]
    says_side = tf.reduce_any(tf.gather(sided, batch_tokens), axis=1)
    mirror = (tf.random.stateless_uniform([count], seed + 1) < 0.5) & ~says_side
    images = tf.where(tf.reshape(mirror, [count, 1, 1, 1]), tf.reverse(images, axis=[2]), images)
    gain = tf.random.stateless_uniform([count, 1, 1, 1], seed, 0.75 / 255.0, 1.25 / 255.0)
    return tf.clip_by_value(tf.cast(images, tf.float32) * gain, 0.0, 1.0)


class _TeacherForcing:
    """The training and validation steps: whole captions fed word by word, the loss on every next word;
    in training, plus the auxiliary loss on the caption's words from the summary cell."""

    def __init__(
        self, encoder: keras.Model, decoder: keras.Model, recipe: CaptionerRecipe, vocabulary: list[str], steps: int
    ) -> None:
        self.encoder, self.decoder, self.recipe = encoder, decoder, recipe
        self.pad = vocabulary.index("<pad>")
        # Which tokens are words the auxiliary head predicts: not <pad>, <start>, <end> or <unk>.
        self.words_mask = tf.constant([word not in SPECIAL for word in vocabulary], tf.float32)
        self.sided = sided_words(vocabulary)
        self.words = keras.layers.Dense(len(vocabulary), name="words")
        self.words.build((None, recipe.features))
        self.variables = encoder.trainable_variables + decoder.trainable_variables + self.words.trainable_variables
        schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, max(1, steps), alpha=0.1)
        self.optimizer = keras.optimizers.Adam(schedule)
        self.train_step = tf.function(self._train_step, reduce_retracing=True)
        self.validation_step = tf.function(self._validation_step, reduce_retracing=True)

    def _word_loss(self, features: tf.Tensor, batch_tokens: tf.Tensor) -> tf.Tensor:
        """Mean binary cross-entropy of the words the caption holds, predicted from the summary cell."""
        present = tf.reduce_max(tf.one_hot(batch_tokens, len(self.words_mask)), axis=1) * self.words_mask
        logits = self.words(features[:, -1])
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=present, logits=logits) * self.words_mask
        return tf.reduce_sum(losses) / (tf.reduce_sum(self.words_mask) * tf.cast(tf.shape(features)[0], tf.float32))

    def _caption_loss(self, features: tf.Tensor, batch_tokens: tf.Tensor, training: bool) -> tf.Tensor:
        state = tf.zeros((tf.shape(features)[0], self.recipe.hidden))
        total, count = tf.constant(0.0), tf.constant(0.0)
        for t in range(self.recipe.max_length):
            out = self.decoder(
                {"features": features, "token": batch_tokens[:, t : t + 1], "hidden": state}, training=training
            )
            state = out["new_hidden"]
            target = batch_tokens[:, t + 1]
            mask = tf.cast(target != self.pad, tf.float32)
            loss = keras.losses.sparse_categorical_crossentropy(target, out["logits"], from_logits=True)
            total += tf.reduce_sum(loss * mask)
            count += tf.reduce_sum(mask)
        return total / count

    def _train_step(self, batch_images: tf.Tensor, batch_tokens: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        pixels = augmented(batch_images, batch_tokens, self.sided, seed)
        with tf.GradientTape() as tape:
            features = self.encoder(pixels, training=True)
            caption = self._caption_loss(features, batch_tokens, training=True)
            loss = caption + self.recipe.word_loss * self._word_loss(features, batch_tokens)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.variables), self.variables, strict=True))
        return caption  # reported beside the validation loss, which is the captions' alone

    def _validation_step(self, batch_images: tf.Tensor, batch_tokens: tf.Tensor) -> tf.Tensor:
        features = self.encoder(tf.cast(batch_images, tf.float32) / 255.0, training=False)
        return self._caption_loss(features, batch_tokens, training=False)


def train_captioner(pairs: Sequence[tuple[Path, Sequence[str]]], recipe: CaptionerRecipe) -> Captioner:
    start_training(recipe.seed)
    with _without_graph_rewrites():
        return _train(pairs, recipe)


@contextmanager
def _without_graph_rewrites() -> Iterator[None]:
    # Grappler's rewrites of the training step made two runs differ from the first epoch, even with
    # op determinism; without them the steps are bit-identical run to run, and no slower here. The
    # setting is process-wide, so it is put back for whatever the process does next.
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def _train(pairs: Sequence[tuple[Path, Sequence[str]]], recipe: CaptionerRecipe) -> Captioner:
    images, texts, owners = prepare(pairs, recipe)
    vocabulary = build_vocabulary(texts, recipe.vocabulary)
    sequences = np.array([tokens(t, vocabulary, recipe.max_length) for t in texts], np.int32)
    owner = np.array(owners)
    held = np.isin(owner, held_out_images(len(pairs)))
    encoder = build_encoder(recipe)
    decoder = build_decoder(encoder.output.shape[1], len(vocabulary), recipe)
    train_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    batches = max(1, int(np.ceil(len(train_rows) / recipe.batch)))
    steps = _TeacherForcing(encoder, decoder, recipe, vocabulary, batches * recipe.epochs)

    rng = np.random.default_rng(recipe.seed)
    losses: list[tuple[float, float]] = []
    best, best_weights, waited = np.inf, None, 0
    bar = progress(total=recipe.epochs, desc="training captioner")
    for epoch in range(recipe.epochs):
        order = rng.permutation(train_rows)
        running = [
            float(
                steps.train_step(
                    tf.constant(images[owner[rows]]), tf.constant(sequences[rows]), tf.constant([epoch, i], tf.int64)
                )
            )
            for i, rows in enumerate(np.array_split(order, batches))
        ]
        checks = [
            float(steps.validation_step(tf.constant(images[owner[rows]]), tf.constant(sequences[rows])))
            for rows in np.array_split(held_rows, max(1, len(held_rows) // recipe.batch))
            if len(rows)
        ]
        losses.append((float(np.mean(running)), float(np.mean(checks)) if checks else float("nan")))
        bar.set_postfix(loss=f"{losses[-1][0]:.4f}", val_loss=f"{losses[-1][1]:.4f}")
        bar.update()
        if losses[-1][1] < best - 1e-4:
            best, best_weights, waited = losses[-1][1], (encoder.get_weights(), decoder.get_weights()), 0
        else:
            waited += 1
            if waited >= recipe.patience:
                break
    bar.close()
    if best_weights is not None:
        encoder.set_weights(best_weights[0])
        decoder.set_weights(best_weights[1])
    return Captioner(encoder, decoder, vocabulary, losses, held_out_images(len(pairs)))
