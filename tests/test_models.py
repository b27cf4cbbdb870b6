"""The three model families on real int8 TFLite models, converted by ``tools.convert``.

The toy models were trained on toy scenes where the truth is known, so these tests check what
the appliance's inference code gets out of the models: boxes in frame coordinates, labels in
the labels file's order, sentences from the vocabulary.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.inference.attention_gru import AttentionGruCaptioner
from appliance.inference.captioner import CaptionerSettings
from appliance.inference.detector import Detection, DetectorSettings, iou_one_to_many
from appliance.inference.loader import Models, load_models
from appliance.inference.settings import InferenceSettings
from tests import toyworld
from tests.conftest import ToyModels


def load(folder, labels=("person",), beam=3, mirror=True) -> Models:  # type: ignore[no-untyped-def]
    settings = InferenceSettings(
        threads=2,
        detector=DetectorSettings(labels=labels),
        captioner=CaptionerSettings(beam_width=beam, length_penalty=0.7, mirror=mirror),
    )
    return load_models(folder, settings)


@pytest.fixture(scope="module")
def models(toy_models: ToyModels) -> Models:
    return load(toy_models.folder)


def recall_and_precision(found: list[list[Detection]], truth: list[list[tuple[float, ...]]]) -> tuple[float, float]:
    hits = total_truth = total_found = 0
    for detections, boxes in zip(found, truth, strict=True):
        total_truth += len(boxes)
        total_found += len(detections)
        free = [np.array(d.box, np.float32) for d in detections]
        for box in boxes:
            if not free:
                continue
            overlaps = iou_one_to_many(np.array(box, np.float32), np.stack(free))
            if overlaps.max() >= 0.5:
                hits += 1
                free.pop(int(overlaps.argmax()))
    return hits / max(total_truth, 1), hits / max(total_found, 1)


def person_boxes(scene: toyworld.Scene, scale: float = 1.0, shift: tuple[int, int] = (0, 0)) -> list[tuple[float, ...]]:
    return [
        (
            p.box[0] * scale + shift[0],
            p.box[1] * scale + shift[1],
            p.box[2] * scale + shift[0],
            p.box[3] * scale + shift[1],
        )
        for p in scene.people
    ]


def test_detector_finds_the_people_in_frame_coordinates(models: Models, toy_models: ToyModels) -> None:
    assert models.detector is not None
    scenes = toy_models.held_out
    found = [models.detector.detect(scene.image) for scene in scenes]
    recall, precision = recall_and_precision(found, [person_boxes(s) for s in scenes])
    assert recall >= 0.9, (recall, precision)
    assert precision >= 0.85, (recall, precision)
    for detections in found:
        for d in detections:
            assert d.label == "person"
            assert d.class_id == 0
            assert 0.4 <= d.score <= 1.0
            assert 0 <= d.box[0] < d.box[2] <= 160
            assert 0 <= d.box[1] < d.box[3] <= 120
    assert all(len(d) == 0 for d, s in zip(found, scenes, strict=True) if s.caption == "an empty scene")


def test_boxes_map_back_through_any_frame_size(models: Models, toy_models: ToyModels) -> None:
    """A 4x larger frame (another scale) and a square frame with the scene 40 px down (no letterbox
    bands, another offset): the letterbox differs, the boxes must still land on the people."""
    assert models.detector is not None
    scenes = toy_models.held_out[:60]
    large = [np.asarray(cv2.resize(s.image, (640, 480), interpolation=cv2.INTER_LINEAR), np.uint8) for s in scenes]
    square = [np.vstack([np.full((40, 160, 3), 128, np.uint8), s.image]) for s in scenes]
    for frames, scale, shift in ((large, 4.0, (0, 0)), (square, 1.0, (0, 40))):
        found = [models.detector.detect(frame) for frame in frames]
        recall, precision = recall_and_precision(found, [person_boxes(s, scale, shift) for s in scenes])
        assert recall >= 0.85, (frames[0].shape, recall, precision)
        assert precision >= 0.85, (frames[0].shape, recall, precision)


def test_the_class_filter_reports_only_the_configured_labels(toy_models: ToyModels) -> None:
    both = load(toy_models.folder, labels=("person", "bag"))
    assert both.detector is not None
    with_bags = [s for s in toy_models.held_out if any(t.label == "bag" for t in s.things)]
    assert len(with_bags) >= 10
    labels = [d.label for s in with_bags for d in both.detector.detect(s.image)]
    assert labels.count("bag") >= 0.7 * len(with_bags)
    only_people = load(toy_models.folder, labels=("person",))
    assert only_people.detector is not None
    assert {d.label for s in with_bags for d in only_people.detector.detect(s.image)} == {"person"}


def test_classifier_scores_each_label_of_the_labels_file(models: Models, toy_models: ToyModels) -> None:
    """Toy rule: a person in red is 'violence'. Swapped labels or colour channels would fail this."""
    assert models.classifier is not None
    right = total = 0
    for scene in toy_models.held_out:
        for person in scene.people:
            result = models.classifier.classify(scene.image, person.fbox)
            assert list(result.scores) == ["normal", "violence"]
            assert sum(result.scores.values()) == pytest.approx(1.0, abs=0.02)
            right += result.top[0] == ("violence" if person.colour == "red" else "normal")
            total += 1
    assert total >= 80
    assert right / total >= 0.9, (right, total)


@pytest.mark.parametrize(("io_type", "dtype"), [("uint8", np.uint8), ("float", np.float32)])
def test_uint8_and_float_io_models_give_the_same_answers(
    models: Models, toy_models: ToyModels, io_type: str, dtype: type
) -> None:
    variant = load(toy_models.io_variant(io_type))
    assert variant.classifier is not None
    assert models.classifier is not None
    model = next(iter(variant.classifier.models.values()))
    assert model.only_input().dtype == dtype
    assert model.only_output().dtype == dtype
    same = total = 0
    for scene in toy_models.held_out:
        for person in scene.people:
            a, b = (
                models.classifier.classify(scene.image, person.fbox),
                variant.classifier.classify(scene.image, person.fbox),
            )
            same += a.top[0] == b.top[0]
            total += 1
    assert same / total >= 0.95, (same, total)


def test_the_decoder_case_that_needs_names_and_requantization_is_real(models: Models) -> None:
    """The converted decoder lists its inputs in another order than Keras, and its hidden state
    has different scales in and out: the captioner must bind by name and requantize each step."""
    assert models.captioner is not None
    decoder = models.captioner.models["decoder"]
    by_index = sorted(decoder.inputs.values(), key=lambda t: t.index)
    assert [t.name for t in by_index] != ["features", "token", "hidden"]
    hidden_in, hidden_out = decoder.inputs["hidden"], decoder.outputs["new_hidden"]
    assert hidden_in.dtype == hidden_out.dtype == np.int8
    assert (hidden_in.scale, hidden_in.zero_point) != (hidden_out.scale, hidden_out.zero_point)


@pytest.mark.parametrize(("beam", "mirror"), [(1, False), (3, False), (3, True)])
def test_captioner_says_what_is_in_the_scene(toy_models: ToyModels, beam: int, mirror: bool) -> None:
    captioner = load(toy_models.folder, beam=beam, mirror=mirror).captioner
    assert captioner is not None
    scenes = toy_models.held_out
    captions = [captioner.caption(scene.image) for scene in scenes]
    exact = sum(c.text == s.caption for c, s in zip(captions, scenes, strict=True)) / len(scenes)
    assert exact >= 0.8, [(c.text, s.caption) for c, s in zip(captions, scenes, strict=True) if c.text != s.caption]
    assert isinstance(captioner, AttentionGruCaptioner)
    for caption in captions:
        assert caption.mean_logprob <= 0.0
        assert set(caption.text.split()) <= set(toyworld.VOCABULARY) - {"<start>", "<end>", "<pad>", "<unk>"}
        assert caption.tokens[-1] == captioner.end or len(caption.tokens) == 8


def test_read_with_its_mirror_image_a_frame_gets_the_caption_of_its_mirror_image(toy_models: ToyModels) -> None:
    # Reading a frame and its mirror image is the same pair of readings as reading the mirror image
    # and the frame (the toy vocabulary has no "left" or "right" to swap): one caption, one probability.
    # Read alone, the two frames give different probabilities, so this tells the two searches apart.
    captioners = {mirror: load(toy_models.folder, mirror=mirror).captioner for mirror in (False, True)}

    def read(mirror: bool, frame: np.ndarray) -> tuple[tuple[int, ...], float]:
        captioner = captioners[mirror]
        assert captioner is not None
        caption = captioner.caption(frame)
        return caption.tokens, caption.mean_logprob

    frames = [scene.image for scene in toy_models.held_out]
    for frame in frames:
        tokens, logprob = read(True, frame)
        flipped_tokens, flipped_logprob = read(True, np.ascontiguousarray(frame[:, ::-1]))
        assert flipped_tokens == tokens
        assert flipped_logprob == pytest.approx(logprob, abs=1e-6)
    alone = [(read(False, f)[1], read(False, np.ascontiguousarray(f[:, ::-1]))[1]) for f in frames]
    assert any(abs(a - b) > 1e-3 for a, b in alone)
