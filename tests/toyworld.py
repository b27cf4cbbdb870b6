"""A tiny scene generator for the inference tests: people as coloured figures, bags, a caption.

Not the synthetic world of the product (that is ``appliance.sim``); just enough structure that
tiny models learn it in seconds, so that tests can assert what the models find.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.inference.imaging import Box, Image
from tools.convert.datasets import Example

COLOURS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 40)}  # BGR
DETECTOR_LABELS = ("person", "bag")
CLASSIFIER_LABELS = ("normal", "violence")  # toy rule: a person in red is "violence"
VOCABULARY = (
    "<pad>",
    "<start>",
    "<end>",
    "<unk>",
    "an",
    "empty",
    "scene",
    "a",
    "person",
    "in",
    "two",
    "people",
    "with",
    "bag",
    "red",
    "green",
    "blue",
)


@dataclass(frozen=True)
class Thing:
    label: str  # "person" or "bag"
    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    colour: str = ""

    @property
    def fbox(self) -> Box:
        x1, y1, x2, y2 = self.box
        return (float(x1), float(y1), float(x2), float(y2))


@dataclass(frozen=True)
class Scene:
    image: Image
    things: tuple[Thing, ...]
    caption: str

    @property
    def people(self) -> list[Thing]:
        return [t for t in self.things if t.label == "person"]


def _background(rng: np.random.Generator, height: int, width: int) -> Image:
    base = rng.integers(70, 170, 3)
    gradient = np.linspace(-25, 25, width)[None, :, None] * rng.choice([-1, 1])
    noise = rng.normal(0, 6, (height, width, 3))
    image: Image = np.clip(base[None, None, :] + gradient + noise, 0, 255).astype(np.uint8)
    return image


def _overlaps(box: tuple[int, int, int, int], others: list[Thing]) -> bool:
    x1, y1, x2, y2 = box
    return any(not (x2 + 3 < o.box[0] or o.box[2] + 3 < x1 or y2 + 3 < o.box[1] or o.box[3] + 3 < y1) for o in others)


def _person(image: Image, box: tuple[int, int, int, int], colour: str) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    head = max(2, w // 3)
    cx = (x1 + x2) // 2
    cv2.circle(image, (cx, y1 + head), head, (150, 180, 210), -1)
    cv2.rectangle(image, (x1, y1 + 2 * head), (x2 - 1, y1 + int(h * 0.65)), COLOURS[colour], -1)
    cv2.rectangle(image, (x1 + w // 8, y1 + int(h * 0.65)), (x2 - 1 - w // 8, y2 - 1), (50, 50, 50), -1)


def make_scene(rng: np.random.Generator, height: int = 120, width: int = 160) -> Scene:
    image = _background(rng, height, width)
    count = int(rng.choice([0, 1, 1, 2]))
    people: list[Thing] = []
    for _ in range(count):
        for _attempt in range(20):
            h = int(rng.integers(height // 4, int(height * 0.7)))
            w = max(6, int(h * rng.uniform(0.35, 0.45)))
            x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            box = (x1, y1, x1 + w, y1 + h)
            if not _overlaps(box, people):
                people.append(Thing("person", box, str(rng.choice(list(COLOURS)))))
                break
    bags: list[Thing] = []
    if people and rng.random() < 0.4:
        for _attempt in range(20):
            s = int(rng.integers(12, 19))
            x1, y1 = int(rng.integers(0, width - s)), int(rng.integers(height // 2, height - s))
            box = (x1, y1, x1 + s, y1 + s)
            if not _overlaps(box, people):
                bags.append(Thing("bag", box))
                break
    for person in people:
        _person(image, person.box, person.colour)
    for bag in bags:
        cv2.rectangle(image, bag.box[:2], (bag.box[2] - 1, bag.box[3] - 1), (30, 110, 160), -1)
    if not people:
        caption = "an empty scene"
    elif len(people) == 2:
        caption = "two people"
    else:
        caption = f"a person in {people[0].colour}"
    if bags:
        caption += " with a bag"
    return Scene(image, tuple(people + bags), caption)


def scenes(seed: int, count: int, height: int = 120, width: int = 160) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, height, width) for _ in range(count)]


def examples(toy: list[Scene]) -> Iterator[Example]:
    """The scenes as the toolchain's data sets see them: persons and bags to detect, person crops
    labelled by the toy rule, captions."""
    for scene in toy:
        yield Example(
            scene.image,
            [(thing.fbox, thing.label, False) for thing in scene.things],
            [(p.fbox, "violence" if p.colour == "red" else "normal") for p in scene.people],
            scene.caption,
        )
