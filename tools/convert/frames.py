"""Calibration frames from a folder of images and video files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from appliance.inference.imaging import Image
from tools.convert import ConvertError
from tools.convert.progress import progress

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".h264"})


def _video_length(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ConvertError(f"{path}: cannot open the video")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # containers without an index: count by decoding
            count = 0
            while capture.grab():
                count += 1
        return count
    finally:
        capture.release()


def _video_frames(path: Path, wanted: list[int]) -> Iterator[Image]:
    """Frames ``wanted`` (ascending indices) of the video, read in one pass."""
    capture = cv2.VideoCapture(str(path))
    try:
        index, pending = 0, iter(wanted)
        target = next(pending, None)
        while target is not None and capture.grab():
            if index == target:
                ok, frame = capture.retrieve()
                if not ok:
                    raise ConvertError(f"{path}: cannot decode frame {index}")
                yield np.asarray(frame, np.uint8)
                target = next(pending, None)
            index += 1
        if target is not None:
            raise ConvertError(f"{path}: the video ended at frame {index}, before frame {target}")
    finally:
        capture.release()


def sample_frames(folder: Path, count: int) -> list[Image]:
    """``count`` BGR frames spread evenly over every image and video frame under ``folder``.

    The images and the frames of the videos, in file-name order, form one sequence; the samples
    are evenly spaced along it, so a long video is not under-represented against a few photos.
    """
    if not folder.is_dir():
        raise ConvertError(f"{folder}: not a folder of calibration images or videos")
    sources = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    if not sources:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        raise ConvertError(f"{folder}: no images or videos ({suffixes})")
    lengths = [1 if p.suffix.lower() in IMAGE_SUFFIXES else _video_length(p) for p in sources]
    total = sum(lengths)
    if total == 0:
        raise ConvertError(f"{folder}: the videos hold no frames")
    picks = np.unique(np.round(np.linspace(0, total - 1, min(count, total))).astype(int))
    starts = np.cumsum([0, *lengths])
    frames: list[Image] = []
    with progress(total=len(picks), desc="reading frames") as bar:
        for i, path in enumerate(sources):
            local = [int(p - starts[i]) for p in picks if starts[i] <= p < starts[i + 1]]
            if not local:
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    raise ConvertError(f"{path}: cannot read the image")
                found: list[Image] = [np.asarray(image, np.uint8)]
            else:
                found = list(_video_frames(path, local))
            frames.extend(found)
            bar.update(len(found))
    return frames


def split_held_out(frames: list[Image], every: int = 5) -> tuple[list[Image], list[Image]]:
    """(calibration, held-out): every ``every``-th frame is held out for validation, so both span the set."""
    if len(frames) < 2:
        raise ConvertError(f"need at least 2 calibration frames, found {len(frames)}")
    held = frames[every - 1 :: every] or frames[-1:]
    held_ids = {id(f) for f in held}
    return [f for f in frames if id(f) not in held_ids], held
