"""Training data in the formats real data comes in.

- detection: a COCO instances file (``images``, ``annotations`` with ``bbox`` [x, y, w, h],
  ``categories``); ``iscrowd: 1`` marks a region to ignore (neither to find nor a false positive);
  and, optionally, folders of images with nothing to find in them (negatives: empty scenes);
- classification: a folder with one subfolder per label, holding images and videos;
- captions: a COCO captions file (``images``, ``annotations`` with ``image_id`` and ``caption``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from appliance.inference.imaging import Image
from tools.convert import ConvertError
from tools.convert.frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from tools.convert.progress import progress

# Person crops of a classifier data set are squares around the person, widened by this share of
# the box's longer side on each side; the appliance crops the same way at run time.
CROP_MARGIN = 0.15


def read_image(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConvertError(f"{path}: cannot read the image")
    return np.asarray(image, np.uint8)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvertError(f"{path}: cannot read it as JSON: {error}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ConvertError(f"{path}: not a COCO file (expected 'images' and 'annotations' lists)")
    return data


def _image_paths(data: dict[str, Any], images: Path, source: Path) -> dict[int, Path]:
    paths = {}
    for entry in data["images"]:
        try:
            paths[int(entry["id"])] = images / str(entry["file_name"])
        except (KeyError, TypeError, ValueError):
            raise ConvertError(f"{source}: an image without id and file_name: {entry!r}") from None
    return paths


@dataclass(frozen=True)
class DetectionSample:
    path: Path
    boxes: npt.NDArray[np.float32]  # (N, 4) x1 y1 x2 y2, pixels
    classes: npt.NDArray[np.intp]  # (N,) index into the dataset's class names
    ignore: npt.NDArray[np.bool_]  # (N,) regions not to learn from


@dataclass(frozen=True)
class DetectionSet:
    names: list[str]  # class names, in category id order
    samples: list[DetectionSample]


def read_coco_detection(annotations: Path, images: Path) -> DetectionSet:
    data = _load_json(annotations)
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    if not categories:
        raise ConvertError(f"{annotations}: no categories")
    index = {int(c["id"]): i for i, c in enumerate(categories)}
    paths = _image_paths(data, images, annotations)
    found: dict[int, list[tuple[list[float], int, bool]]] = defaultdict(list)
    for note in data["annotations"]:
        x, y, w, h = (float(v) for v in note["bbox"])
        if note["category_id"] not in index:
            raise ConvertError(
                f"{annotations}: annotation {note.get('id')} has an unknown category {note['category_id']}"
            )
        found[int(note["image_id"])].append(
            ([x, y, x + w, y + h], index[note["category_id"]], bool(note.get("iscrowd", 0)))
        )
    samples = []
    for image_id, path in paths.items():
        notes = found.get(image_id, [])
        samples.append(
            DetectionSample(
                path,
                np.array([n[0] for n in notes], np.float32).reshape(-1, 4),
                np.array([n[1] for n in notes], np.intp),
                np.array([n[2] for n in notes], bool),
            )
        )
    return DetectionSet([str(c["name"]) for c in categories], samples)


def read_negatives(folder: Path) -> list[DetectionSample]:
    """The images of ``folder`` (and its subfolders) as detection samples with nothing in them: every box
    the detector gives on one is a false positive to unlearn."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise ConvertError(f"{folder}: no images for negatives (a folder of empty scenes)")
    none = np.zeros((0, 4), np.float32)
    return [DetectionSample(p, none, np.zeros(0, np.intp), np.zeros(0, bool)) for p in paths]


@dataclass(frozen=True)
class LabelledImages:
    labels: list[str]  # the subfolder names, sorted
    samples: list[tuple[Path, int]]  # an image or a video, and its label


def read_label_folders(folder: Path) -> LabelledImages:
    if not folder.is_dir():
        raise ConvertError(f"{folder}: not a folder with one subfolder per label")
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if len(labels) < 2:
        raise ConvertError(f"{folder}: needs a subfolder per label, at least two; found {labels or 'none'}")
    samples = [
        (path, i)
        for i, label in enumerate(labels)
        for path in sorted((folder / label).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
    ]
    empty = [label for i, label in enumerate(labels) if not any(s[1] == i for s in samples)]
    if empty:
        raise ConvertError(f"{folder}: no images or videos for {', '.join(empty)}")
    return LabelledImages(labels, samples)


def read_coco_captions(annotations: Path, images: Path) -> list[tuple[Path, list[str]]]:
    data = _load_json(annotations)
    paths = _image_paths(data, images, annotations)
    captions: dict[int, list[str]] = defaultdict(list)
    for note in data["annotations"]:
        captions[int(note["image_id"])].append(str(note["caption"]))
    pairs = [(paths[i], captions[i]) for i in paths if captions.get(i)]
    if not pairs:
        raise ConvertError(f"{annotations}: no captioned images")
    return pairs


@dataclass(frozen=True)
class Example:
    """One image as the three data sets see it."""

    image: Image
    objects: list[tuple[tuple[float, float, float, float], str, bool]]  # box, category, ignore
    people: list[tuple[tuple[float, float, float, float], str]]  # person box, classifier label
    caption: str


@dataclass(frozen=True)
class DataSets:
    """A folder holding the three data sets of one set of images."""

    folder: Path

    @property
    def images(self) -> Path:
        return self.folder / "images"

    @property
    def detection(self) -> Path:
        return self.folder / "detection.json"

    @property
    def crops(self) -> Path:
        return self.folder / "crops"

    @property
    def captions(self) -> Path:
        return self.folder / "captions.json"


CROP_SIZE = 128  # pixels of a person crop on disk; the classifier's input is smaller


def write_datasets(
    examples: Iterable[Example],
    folder: Path,
    categories: Sequence[str],
    labels: Sequence[str],
    total: int | None = None,
) -> DataSets:
    """Write JPEG frames, a COCO detection file (ignored objects as ``iscrowd`` regions), square
    person crops in one folder per label and a COCO captions file."""
    from appliance.inference.imaging import square_crop

    out = DataSets(folder)
    out.images.mkdir(parents=True, exist_ok=True)
    for label in labels:
        (out.crops / label).mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    for index, example in enumerate(progress(iterable=examples, total=total, desc=f"writing {folder.name}")):
        name = f"{index:06d}.jpg"
        height, width = example.image.shape[:2]
        cv2.imwrite(str(out.images / name), example.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": index, "file_name": name, "width": width, "height": height})
        captions.append({"id": index, "image_id": index, "caption": example.caption})
        for (x1, y1, x2, y2), category, ignore in example.objects:
            notes.append(
                {
                    "id": len(notes) + 1,
                    "image_id": index,
                    "category_id": categories.index(category) + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 1),
                    "iscrowd": int(ignore),
                }
            )
        for number, (box, label) in enumerate(example.people):
            crop = cv2.cvtColor(square_crop(example.image, box, CROP_MARGIN, CROP_SIZE), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(out.crops / label / f"{index:06d}_{number}.png"), crop)
    names = [{"id": i + 1, "name": name} for i, name in enumerate(categories)]
    out.detection.write_text(json.dumps({"images": images, "annotations": notes, "categories": names}))
    out.captions.write_text(json.dumps({"images": images, "annotations": captions}))
    return out
