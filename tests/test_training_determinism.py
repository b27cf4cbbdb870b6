"""The captioner trainer is deterministic: the same data and recipe give the same weights, bit for
bit, in two separate processes (so the reference command remakes the committed captioner's files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # trains twice

TRAIN = """
import hashlib, sys
from pathlib import Path
import numpy as np
import tensorflow as tf
from tools.convert.train_captioner import CaptionerRecipe, train_captioner
folder = Path(sys.argv[1])
pairs = [(path, [path.stem.replace("-", " ")]) for path in sorted(folder.glob("*.png"))]
recipe = CaptionerRecipe(epochs=1, batch=32)
captioner = train_captioner(pairs, recipe)
digest = hashlib.sha256()
for weights in captioner.encoder.get_weights() + captioner.decoder.get_weights():
    digest.update(np.ascontiguousarray(weights).tobytes())
print(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False), digest.hexdigest())
"""


def test_training_the_captioner_twice_gives_the_same_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(64):
        colour = ("red", "green", "blue")[i % 3]
        image = rng.integers(0, 255, (288, 384, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"a-{colour}-square-{i}.png"), image)
    runs = [
        subprocess.run(
            [sys.executable, "-c", TRAIN, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()[-2:]
        for _ in range(2)
    ]
    assert runs[0][1] == runs[1][1]
    # the trainer turns the graph rewrites off for its own steps only
    assert runs[0][0] == "False"
