"""Person crops for the classifier, from a folder per label of images and videos.

Videos are sampled every k-th frame. With a detector (a models folder holding a detector slot,
run through the appliance's own code), each person it finds in a frame gives a square crop
around the person, widened as the appliance widens it at run time, so the classifier learns
the person rather than the scene; frames without a person give nothing. Without a detector,
each image or frame is taken as a crop already.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from appliance.inference.detector import Detector, DetectorSettings
from appliance.inference.imaging import Box, Image, square_crop
from appliance.inference.loader import DETECTORS, build_slot
from appliance.inference.manifest import read_manifest
from appliance.inference.settings import InferenceSettings
from tools.convert import ConvertError
from tools.convert.datasets import CROP_MARGIN, LabelledImages, read_image
from tools.convert.frames import IMAGE_SUFFIXES
from tools.convert.progress import progress


@dataclass(frozen=True)
class Crops:
    images: npt.NDArray[np.uint8]  # (N, size, size, 3) RGB
    labels: npt.NDArray[np.int32]  # (N,) index into the data set's labels
    sources: npt.NDArray[np.int32]  # (N,) which file each crop came from (to split by file)
    frames: int  # images and video frames looked at
    empty_frames: int  # of those, frames where the detector found nobody


def load_person_detector(folder: Path, threads: int = 2) -> Detector:
    """The detector slot of the models folder ``folder``, reporting its person classes only."""
    manifest = read_manifest(folder)
    if "detector" not in manifest.slots:
        raise ConvertError(f"{manifest.path}: no detector slot; make one with: python -m tools.convert yolo")
    settings = InferenceSettings(threads=threads, detector=DetectorSettings())
    return build_slot(manifest, "detector", DETECTORS, settings)


def _frames(path: Path, step: int) -> Iterator[Image]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        yield read_image(path)
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ConvertError(f"{path}: cannot open the video")
        index = 0
        while capture.grab():
            if index % step == 0:
                ok, frame = capture.retrieve()
                if not ok:
                    raise ConvertError(f"{path}: cannot decode frame {index}")
                yield np.asarray(frame, np.uint8)
            index += 1
    finally:
        capture.release()


def _boxes(frame: Image, detector: Detector | None) -> list[Box]:
    if detector is None:
        return [(0.0, 0.0, float(frame.shape[1]), float(frame.shape[0]))]
    return [d.box for d in detector.detect(frame)]


def person_crops(data: LabelledImages, size: int, frame_step: int, detector: Detector | None) -> Crops:
    """Square RGB crops of every person in every image and every ``frame_step``-th video frame."""
    crops: list[Image] = []
    labels: list[int] = []
    sources: list[int] = []
    frames = empty = 0
    margin = CROP_MARGIN if detector is not None else 0.0
    for source, (path, label) in enumerate(progress(iterable=data.samples, desc="person crops")):
        for frame in _frames(path, frame_step):
            frames += 1
            boxes = _boxes(frame, detector)
            empty += not boxes
            for box in boxes:
                crops.append(square_crop(frame, box, margin, size))
                labels.append(label)
                sources.append(source)
    missing = sorted({data.labels[i] for i in range(len(data.labels))} - {data.labels[i] for i in labels})
    if missing:
        raise ConvertError(f"no person found for {', '.join(missing)}: check the videos, or the detector's folder")
    return Crops(np.stack(crops), np.array(labels, np.int32), np.array(sources, np.int32), frames, empty)
