"""Motion on a tiny grey image: is a camera's scene moving, and is a box where it moves?

Both questions compare a 64x48 grey image of the frame with the one before. The scheduler asks
the first of it to spend the detector where something happens; the presence tracker asks the
second of each sure box, so that a still picture (a poster, a fruit bowl, a photo on the wall,
which a real detector may score like a person) never makes a person present. People arrive
moving; a real person who stands still stays present once seen.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from appliance.inference.detector import Detection
from appliance.inference.imaging import Image

MOTION_SIZE = (64, 48)  # width, height of the grey image compared
# Each tiny pixel averages 4 x 4 sampled pixels rather than every pixel under it: enough to keep
# night sensor noise (sigma 15) below MOTION_LEVEL, at a third of the cost of averaging them all.
MOTION_SAMPLES = (MOTION_SIZE[0] * 4, MOTION_SIZE[1] * 4)
MOTION_LEVEL = 12  # grey levels a tiny pixel must change by to count as moved
BOX_MOVED_SHARE = 0.02  # share of a box's tiny pixels (one at least) that must change for the box to move

Mask = npt.NDArray[np.bool_]


def _tiny(image: Image, samples: Image, samples_grey: Image, grey: Image) -> None:
    """``image`` as the 64x48 grey image, into ``grey`` (the other arrays are scratch space)."""
    cv2.resize(image, MOTION_SAMPLES, dst=samples, interpolation=cv2.INTER_NEAREST)
    cv2.cvtColor(samples, cv2.COLOR_BGR2GRAY, dst=samples_grey)
    cv2.resize(samples_grey, MOTION_SIZE, dst=grey, interpolation=cv2.INTER_AREA)


class _TinyGrey:
    """Frames as 64x48 grey images, each compared with the one before."""

    def __init__(self) -> None:
        self._previous: Image | None = None
        self._grey = np.empty((MOTION_SIZE[1], MOTION_SIZE[0]), np.uint8)
        self._samples = np.empty((MOTION_SAMPLES[1], MOTION_SAMPLES[0], 3), np.uint8)
        self._samples_grey = np.empty((MOTION_SAMPLES[1], MOTION_SAMPLES[0]), np.uint8)
        self._diff = np.empty_like(self._grey)

    def changed(self, image: Image) -> Mask | None:
        """The tiny pixels that changed by more than MOTION_LEVEL since the previous image; None for the first."""
        _tiny(image, self._samples, self._samples_grey, self._grey)
        previous = self._previous
        if previous is None:
            self._previous = self._grey.copy()
            return None
        cv2.absdiff(self._grey, previous, dst=self._diff)
        previous[:] = self._grey
        mask: Mask = self._diff > MOTION_LEVEL
        return mask


class MotionGate:
    """Tells whether a camera's scene moved since the previous frame it was shown."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._tiny = _TinyGrey()

    def moved(self, image: Image) -> bool:
        """True when more than ``share`` of the tiny grey image changed; the first frame counts as motion."""
        changed = self._tiny.changed(image)
        return changed is None or int(np.count_nonzero(changed)) > self.share * changed.size


class BoxMotion:
    """Which boxes of a detection lie where the picture changed since the camera's previous detection.

    The comparison is made only when a box is asked about (someone arriving), not at every detection:
    an empty scene and a present person cost nothing here.
    """

    def __init__(self) -> None:
        self._previous: Image | None = None
        self._image: Image | None = None
        self._changed: Mask | None = None
        self._tiny = _TinyGrey()

    def update(self, image: Image) -> None:
        """Take the newest detected frame of the camera (kept by reference, not copied)."""
        self._previous, self._image, self._changed = self._image, image, None

    def _mask(self) -> Mask | None:
        if self._changed is None and self._previous is not None and self._image is not None:
            self._tiny = _TinyGrey()
            self._tiny.changed(self._previous)
            self._changed = self._tiny.changed(self._image)
        return self._changed

    def moved(self, detection: Detection) -> bool:
        """Whether the box's tiny pixels changed (at least BOX_MOVED_SHARE of them, and one); on a camera's
        first frame every box did, as the scheduler's gate counts a first frame as motion: someone already
        walking is not kept waiting, and a still picture gives one sure sighting, never the second."""
        changed = self._mask()
        if changed is None:
            return True
        height, width = self._image.shape[:2] if self._image is not None else (1, 1)
        x1, y1, x2, y2 = detection.box
        sx, sy = MOTION_SIZE[0] / width, MOTION_SIZE[1] / height
        left, top = max(0, int(x1 * sx)), max(0, int(y1 * sy))
        right, bottom = min(MOTION_SIZE[0], int(np.ceil(x2 * sx))), min(MOTION_SIZE[1], int(np.ceil(y2 * sy)))
        cells = changed[top:bottom, left:right]
        return cells.size > 0 and int(np.count_nonzero(cells)) >= max(1.0, BOX_MOVED_SHARE * cells.size)
