"""The world's geometry: a floor plane in metres (x across, z ahead, y up) seen by pinhole cameras."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

NEAR = 0.3  # metres: nothing nearer the camera than this is drawn

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Camera:
    """Where a camera stands and looks, and its image size."""

    x: float
    z: float
    height: float  # of the lens above the floor, metres
    yaw: float  # degrees; 0 looks along +z, 90 along +x
    pitch: float  # degrees down from horizontal
    fov: float  # horizontal field of view, degrees
    width: int
    height_px: int

    @cached_property
    def _basis(self) -> tuple[Array, Array, Array]:
        yaw, pitch = math.radians(self.yaw), math.radians(self.pitch)
        ahead = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        right = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        up = np.array([0.0, 1.0, 0.0])
        forward = ahead * math.cos(pitch) - up * math.sin(pitch)
        camera_up = up * math.cos(pitch) + ahead * math.sin(pitch)
        return right, camera_up, forward

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.fov) / 2)

    def rotate(self, vectors: Array) -> Array:
        """World directions (..., 3) in camera axes: x right, y up, z along the view."""
        right, up, forward = self._basis
        return np.stack([vectors @ right, vectors @ up, vectors @ forward], axis=-1)

    def to_camera(self, points: Array) -> Array:
        """World points (N, 3) in camera coordinates (N, 3)."""
        return self.rotate(np.asarray(points, np.float64) - [self.x, self.height, self.z])

    def to_pixels(self, camera_points: Array) -> Array:
        """Camera coordinates (N, 3) with z > 0 to pixels (N, 2)."""
        f = self.focal
        z = camera_points[:, 2]
        return np.stack(
            [self.width / 2 + f * camera_points[:, 0] / z, self.height_px / 2 - f * camera_points[:, 1] / z], axis=-1
        )

    def project(self, points: Array) -> tuple[Array, Array]:
        """Pixels (N, 2) and depth (N,) of world points; depth <= NEAR means behind the camera."""
        camera = self.to_camera(points)
        depth = camera[:, 2]
        safe = camera.copy()
        safe[:, 2] = np.maximum(depth, NEAR)
        return self.to_pixels(safe), depth

    def polygon(self, points: Array) -> Array | None:
        """Pixels of a planar world polygon, clipped to the near plane; None when it is all behind."""
        camera = self.to_camera(points)
        kept: list[Array] = []
        for i in range(len(camera)):
            a, b = camera[i], camera[(i + 1) % len(camera)]
            a_in, b_in = a[2] > NEAR, b[2] > NEAR
            if a_in:
                kept.append(a)
            if a_in != b_in:
                t = (NEAR - a[2]) / (b[2] - a[2])
                kept.append(a + t * (b - a))
        if len(kept) < 3:
            return None
        return self.to_pixels(np.array(kept))


@dataclass(frozen=True)
class Place:
    """A rectangular space on the floor, with walls (indoors) or open sides (outdoors)."""

    name: str
    kind: str  # corridor, shop, room, entrance
    x: tuple[float, float]
    z: tuple[float, float]
    wall_height: float = 3.0

    @property
    def outdoor(self) -> bool:
        return self.kind == "entrance"

    def contains(self, x: float, z: float, margin: float = 0.0) -> bool:
        return self.x[0] + margin <= x <= self.x[1] - margin and self.z[0] + margin <= z <= self.z[1] - margin
