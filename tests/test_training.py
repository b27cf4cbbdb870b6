"""The classifier and captioner trainers end to end on tiny data sets made here, down to int8 models
the appliance loads and the reports they end with.

- classifier: a folder per label holding videos and images of the synthetic world (people
  fighting, a person walking); persons are found by the shipped reference detector (models/),
  every third video frame; MobileNetV2 starts from a weights file;
- detector: negatives, folders of empty scenes learned as background beside a COCO file; inputs
  of a camera's shape (WxH), whose anchors, targets and mirror images must agree with the maps;
- captioner: a COCO captions file of a few hundred captions (five per image, worded differently)
  over images of coloured shapes.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.cameras.registry import open_source
from appliance.cameras.source import SourceSettings
from appliance.cameras.uri import CameraUri
from appliance.inference.loader import load_models
from appliance.inference.settings import InferenceSettings
from tests.conftest import ROOT
from tools.convert.cli import main
from tools.convert.datasets import read_negatives
from tools.convert.layers import anchor_grid
from tools.convert.synthetic import write_synthetic
from tools.convert.train_detector import STRIDES, assign, build_detector, flip_order

pytestmark = pytest.mark.slow  # trains models: 2 minutes

SIZE = 48
COLOURS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 40), "yellow": (40, 220, 230)}
SHAPES = ("square", "circle")
PLACES = ("left", "right")


def _sim_frames(scenario: str, count: int, skip: int) -> list[np.ndarray]:
    source = open_source(CameraUri.parse(f"sim:{scenario}?seed=4&realtime=0"), SourceSettings())
    source.start()
    try:
        frames = [source.read() for _ in range(skip + count)][skip:]
    finally:
        source.stop()
    assert all(f is not None for f in frames)
    return [np.asarray(f) for f in frames]


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def action_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """violence/: a fight (video) and two frames of it (images); normal/: a walk, likewise."""
    folder = tmp_path_factory.mktemp("actions")
    for label, scenario, skip in (("violence", "room-fight", 150), ("normal", "corridor-walk", 60)):
        (folder / label).mkdir()
        frames = _sim_frames(scenario, 62, skip)
        _write_video(folder / label / f"{scenario}.avi", frames[:60])
        for i, frame in enumerate(frames[60:]):
            cv2.imwrite(str(folder / label / f"still{i}.png"), frame)
    return folder


def _mobilenet_weights(path: Path) -> Path:
    """A weights file as Keras Applications ship them for include_top=False (here, not ImageNet's)."""
    import keras

    keras.utils.set_random_seed(7)
    base = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    base.save_weights(path)
    return path


def test_the_classifier_trains_on_videos_with_detector_crops(
    action_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _mobilenet_weights(tmp_path / "mobilenet_v2_0.35_no_top.weights.h5")
    out = tmp_path / "models"
    args = ["classifier", str(action_videos), "--detector", str(ROOT / "models"), "--frame-step", "3"]
    args += ["--size", str(SIZE), "--epochs", "10", "--batch", "16", "--weights", str(weights), "--calib-frames", "60"]
    assert main([*args, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"classifier: top-1 agreement [\d.]+%", printed)

    classifier = load_models(out, InferenceSettings(threads=2)).classifier
    assert classifier is not None
    assert classifier.labels == ("normal", "violence")
    report = (out / "classifier-report.md").read_text()
    crops = int(re.search(r"Training: (\d+) person crops from (\d+) images and video frames", report).group(1))  # type: ignore[union-attr]
    # 2 videos x 20 sampled frames + 4 images; the fight has two people, the walk one
    assert 44 <= crops <= 2 * 44
    accuracy = {
        name: float(value) / 100 for name, value in re.findall(r"held-out accuracy, (float|int8): ([\d.]+)%", report)
    }
    print(f"classifier held-out accuracy: {accuracy}")
    assert set(accuracy) == {"float", "int8"}
    assert abs(accuracy["float"] - accuracy["int8"]) <= 0.2
    assert "| held-out accuracy per label | float | int8 |" in report
    assert "![float and int8](classifier-report.png)" in report
    image = cv2.imread(str(out / "classifier-report.png"))
    assert image is not None
    assert image.shape[1] > 600
    # conversion calibrated on the crops training made, not on whole frames
    metadata = json.loads((out / "classifier.json").read_text())
    assert metadata["calibration"]["folder"].endswith("classifier-crops")
    # what a rerun needs to make the same file: the versions that trained and converted it
    assert metadata["toolchain"]["keras"] == importlib.metadata.version("keras")
    assert metadata["toolchain"]["numpy"] == np.__version__


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # Keras, while it tries the file
def test_a_weights_file_of_another_model_is_refused(
    action_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.weights.h5"
    import keras

    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(wrong)
    args = ["classifier", str(action_videos), "--size", str(SIZE), "--epochs", "1", "--weights", str(wrong)]
    assert main([*args, "--frame-step", "20", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "m")]) == 2
    assert (
        "wrong.weights.h5: not MobileNetV2 ImageNet weights without the top for alpha 0.35" in capsys.readouterr().err
    )


def _shape_image(colour: str, shape: str, place: str, rng: np.random.Generator) -> np.ndarray:
    image = np.full((96, 128, 3), int(rng.integers(200, 256)), np.uint8)
    x = int(rng.integers(15, 40)) + (0 if place == "left" else 64)
    y = int(rng.integers(25, 70))
    if shape == "square":
        cv2.rectangle(image, (x - 14, y - 14), (x + 14, y + 14), COLOURS[colour], -1)
    else:
        cv2.circle(image, (x, y), 15, COLOURS[colour], -1)
    return image


def _captions(colour: str, shape: str, place: str) -> list[str]:
    return [
        f"a {colour} {shape} on the {place}",
        f"a {colour} {shape} on the {place} side",
        f"one {colour} {shape} at the {place}",
        f"a {shape} that is {colour} on the {place}",
        f"the {colour} {shape} is on the {place}",
    ]


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A COCO captions file (80 images, 400 captions) and its image folder."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(5)
    images: list[dict[str, object]] = []
    notes: list[dict[str, object]] = []
    for index in range(80):
        colour = list(COLOURS)[index % 4]
        shape, place = SHAPES[(index // 4) % 2], PLACES[(index // 8) % 2]
        name = f"{index:04d}.png"
        cv2.imwrite(str(folder / name), _shape_image(colour, shape, place, rng))
        images.append({"id": index, "file_name": name, "width": 128, "height": 96})
        notes += [
            {"id": len(notes) + k, "image_id": index, "caption": text}
            for k, text in enumerate(_captions(colour, shape, place))
        ]
    captions = folder / "captions_train.json"
    captions.write_text(json.dumps({"images": images, "annotations": notes}))
    return captions, folder


def test_the_captioner_trains_on_coco_captions_and_reports_bleu(shapes_coco: tuple[Path, Path], tmp_path: Path) -> None:
    from dataclasses import replace

    from tests import modelkit
    from tools.convert import train

    captions, images = shapes_coco
    out = tmp_path / "models"
    recipe = replace(modelkit.CAPTIONER, epochs=30, patience=6, batch=16)
    to = train.Destination(tmp_path / "work", out, "test captioner", calib_frames=40)
    summary = train.captioner(captions, images, recipe, to)
    assert summary.startswith("captioner: identical tokens")

    captioner = load_models(out, InferenceSettings(threads=2)).captioner
    assert captioner is not None
    vocabulary = (out / "captioner_vocab.txt").read_text().split()
    assert vocabulary[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert {"red", "green", "square", "circle", "left", "right"} <= set(vocabulary)
    report = (out / "captioner-report.md").read_text()
    bleu = {
        name: [float(v) for v in re.findall(r"BLEU-\d ([\d.]+)", line)]
        for name, line in re.findall(r"held-out (float|int8): (.*)", report)
    }
    print(f"captioner held-out BLEU-1..4: {bleu}")
    assert len(bleu["float"]) == len(bleu["int8"]) == 4
    assert bleu["float"][0] >= 0.5  # the words of a shape's caption, learnt in a minute
    assert abs(bleu["float"][3] - bleu["int8"][3]) <= 0.2
    assert "**Held-out examples**" in report
    assert (out / "captioner-report.png").stat().st_size > 10_000


def test_captioner_training_mirrors_half_the_frames_but_never_one_whose_caption_says_left_or_right() -> None:
    import tensorflow as tf

    from tools.convert.train_captioner import augmented, sided_words

    vocabulary = ["<pad>", "<start>", "<end>", "<unk>", "a", "person", "on", "the", "left", "right"]
    # Brightness rises from left to right in every frame: a mirrored one falls.
    ramp = np.broadcast_to(np.arange(10, 250, 40, dtype=np.uint8)[None, :, None], (4, 6, 3))
    images = np.stack([ramp] * 64)
    said = [[1, 4, 5, 6, 7, 8 if i % 3 == 0 else 9 if i % 3 == 1 else 4, 2] for i in range(64)]
    sided = np.array([i % 3 != 2 for i in range(64)])
    pixels = augmented(
        tf.constant(images), tf.constant(said, tf.int32), sided_words(vocabulary), tf.constant([3, 7], tf.int64)
    ).numpy()
    assert pixels.min() >= 0.0
    assert pixels.max() <= 1.0
    mirrored = pixels[:, 0, 0, 0] > pixels[:, 0, -1, 0]
    assert not mirrored[sided].any(), "a caption saying left or right would be wrong for its mirrored frame"
    assert 0 < mirrored[~sided].sum() < (~sided).sum(), "about half the other frames are mirrored"


def test_negatives_are_the_images_of_a_folder_with_nothing_to_find(tmp_path: Path) -> None:
    empty = write_synthetic(tmp_path / "empty", seed=5, count=6, nobody=True)
    samples = read_negatives(empty.images)
    assert [s.path.name for s in samples] == [f"{i:06d}.jpg" for i in range(6)]
    assert all(s.boxes.shape == (0, 4) and len(s.classes) == 0 and len(s.ignore) == 0 for s in samples)


def test_the_synthetic_detection_set_boxes_people_and_what_they_hold(tmp_path: Path) -> None:
    """The reference detector's data: person, knife, bag and phone, each held object boxed where the world drew
    it, inside (or at the edge of) its holder's box."""
    data = write_synthetic(tmp_path / "data", seed=11, count=120)
    coco = json.loads(data.detection.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(names.values()) == ["bag", "knife", "person", "phone"]
    found = {name: [a for a in coco["annotations"] if names[a["category_id"]] == name] for name in names.values()}
    assert len(found["person"]) > 100
    assert all(found[thing] for thing in ("knife", "bag", "phone")), {k: len(v) for k, v in found.items()}
    people: dict[int, list[list[float]]] = {}
    for a in found["person"]:
        people.setdefault(a["image_id"], []).append(a["bbox"])
    for thing in ("knife", "bag", "phone"):
        for a in found[thing]:
            x, y, w, h = a["bbox"]
            assert w > 0
            assert h > 0
            near = [
                p for p in people.get(a["image_id"], []) if p[0] - w <= x <= p[0] + p[2] and p[1] <= y <= p[1] + p[3]
            ]
            assert near, (thing, a)


def test_the_detector_command_refuses_a_negatives_folder_without_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data", seed=5, count=4)
    (tmp_path / "nothing").mkdir()
    argv = ["detector", "--coco", str(data.detection), "--images", str(data.images), "--work", str(tmp_path / "w")]
    status = main([*argv, "--out", str(tmp_path / "out"), "--negatives", str(tmp_path / "nothing"), "--epochs", "1"])
    assert status == 2
    assert f"{tmp_path / 'nothing'}: no images for negatives" in capsys.readouterr().err
    assert not (tmp_path / "w" / "detector.keras").exists()


def test_a_detector_of_a_cameras_shape_has_an_anchor_per_cell_of_each_map_in_row_order() -> None:
    """160x96: 20x12, 10x6 and 5x3 cells; anchors go row by row, as the maps are flattened."""
    centres, strides = anchor_grid((160, 96), STRIDES)
    assert len(centres) == 20 * 12 + 10 * 6 + 5 * 3
    assert strides.tolist() == [8.0] * 240 + [16.0] * 60 + [32.0] * 15
    assert centres[:21].tolist() == [[4.0 + 8 * i, 4.0] for i in range(20)] + [[4.0, 12.0]]
    assert centres[:, 0].max() < 160
    assert centres[:, 1].max() < 96
    model = build_detector(2, (160, 96))
    assert model.input_shape == (None, 96, 160, 3)  # height first, as images are
    assert model.output_shape == (None, 4 + 2, len(centres))


def test_a_mirrored_image_of_a_cameras_shape_mirrors_every_anchor_in_its_row() -> None:
    centres, strides = anchor_grid((160, 96), STRIDES)
    order = flip_order((160, 96))
    assert sorted(order.tolist()) == list(range(len(centres)))
    assert np.allclose(centres[order, 0], 160 - centres[:, 0])
    assert np.allclose(centres[order, 1], centres[:, 1])
    assert (strides[order] == strides).all()
    # the first row of the finest level, 20 anchors across, read right to left
    assert order[:20].tolist() == list(range(19, -1, -1))


def test_targets_are_fractions_of_the_inputs_width_and_height() -> None:
    centres, strides = anchor_grid((160, 96), STRIDES)
    box = np.array([[20.0, 16.0, 40.0, 56.0]], np.float32)  # 20 wide, 40 tall
    target = assign(box, np.array([1]), np.array([False]), centres, strides, (160, 96), 2)
    positive = target[-2] == 1
    assert positive.any()
    assert np.allclose(target[:4, positive].T, [30 / 160, 36 / 96, 20 / 160, 40 / 96])
    assert (target[5, positive] == 1).all()
    assert (target[4, positive] == 0).all()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--size", "400x300", "expected N or WxH, each a multiple of 32 from 32 up, got 400x300"),
        ("--size", "320x", "expected N or WxH in pixels, got 320x"),
        ("--size", "320x240x3", "expected N or WxH in pixels, got 320x240x3"),
        ("--size", "16", "expected N or WxH, each a multiple of 32 from 32 up, got 16"),
        ("--depth", "0", "expected a positive integer, got 0"),
    ],
)
def test_the_detector_command_refuses_a_shape_it_cannot_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    argv = ["detector", "--coco", str(tmp_path / "none.json"), "--images", str(tmp_path), option, value]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err
