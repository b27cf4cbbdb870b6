"""Procedural places drawn in perspective, and the things in them that move but are not people.

A backdrop is painted once per camera: floor, walls or sky, doors, shelves, furniture, windows.
Clutter (plants, hanging signs, curtains, branches) sways every frame, and shadows drift across
the floor: they are there to tempt the detector, as the real ones do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.inference.imaging import Image
from appliance.sim.geometry import Array, Camera, Place

Colour = tuple[int, int, int]

PALETTES: dict[str, dict[str, Colour]] = {
    "corridor": {"floor": (120, 130, 140), "wall": (190, 200, 205), "end": (170, 180, 190), "ceiling": (215, 215, 210)},
    "shop": {"floor": (175, 180, 180), "wall": (210, 215, 220), "end": (190, 200, 205), "ceiling": (225, 225, 225)},
    "room": {"floor": (70, 105, 140), "wall": (170, 195, 215), "end": (150, 180, 200), "ceiling": (220, 225, 230)},
    "entrance": {"floor": (140, 140, 135), "wall": (120, 140, 160), "end": (110, 125, 150), "ceiling": (0, 0, 0)},
}
KINDS = tuple(PALETTES)


def _fill(image: Image, camera: Camera, corners: Array, colour: Colour) -> None:
    pixels = camera.polygon(corners)
    if pixels is not None:
        cv2.fillPoly(image, [np.round(pixels * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


def _wall_rect(
    along: str, fixed: float, start: float, end: float, bottom: float, top: float, inset: float = 0.0
) -> Array:
    """Corners of a rectangle on a wall: ``along`` is the axis the wall runs along ('x' or 'z')."""
    if along == "x":
        return np.array(
            [
                [start, bottom, fixed - inset],
                [end, bottom, fixed - inset],
                [end, top, fixed - inset],
                [start, top, fixed - inset],
            ]
        )
    return np.array(
        [
            [fixed - inset, bottom, start],
            [fixed - inset, bottom, end],
            [fixed - inset, top, end],
            [fixed - inset, top, start],
        ]
    )


def _random_colour(rng: np.random.Generator, low: int, high: int) -> Colour:
    b, g, r = (int(c) for c in rng.integers(low, high, 3))
    return (b, g, r)


def _shade(colour: Colour, factor: float) -> Colour:
    return (min(255, int(colour[0] * factor)), min(255, int(colour[1] * factor)), min(255, int(colour[2] * factor)))


def paint(place: Place, camera: Camera, rng: np.random.Generator) -> Image:
    """The still picture of ``place`` from ``camera``."""
    palette = PALETTES[place.kind]
    image = np.zeros((camera.height_px, camera.width, 3), np.uint8)
    (x0, x1), (z0, z1), top = place.x, place.z, place.wall_height
    if place.outdoor:
        sky = np.linspace(1.0, 0.75, camera.height_px)[:, None, None] * np.array([235, 205, 170])
        image[:] = sky.astype(np.uint8)
        _fill(image, camera, _ground(place), (110, 115, 110))
    else:
        image[:] = palette["ceiling"]
    walls: list[tuple[float, Array, Colour]] = []
    sides = [
        ("z", x0, z0, z1, palette["wall"]),
        ("z", x1, z0, z1, _shade(palette["wall"], 0.9)),
        ("x", z1, x0, x1, palette["end"]),
        ("x", z0, x0, x1, palette["end"]),
    ]
    for along, fixed, start, end, colour in sides:
        if place.outdoor and not (along == "x" and fixed == z1):
            continue  # outdoors only the facade at the far end stands
        corners = _wall_rect(along, fixed, start, end, 0.0, top if not place.outdoor else top * 2.5)
        walls.append((float(np.linalg.norm(corners.mean(axis=0)[[0, 2]] - [camera.x, camera.z])), corners, colour))
    for _, corners, colour in sorted(walls, key=lambda w: -w[0]):
        _fill(image, camera, corners, colour)
    _fill(image, camera, np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]]), palette["floor"])
    _floor_lines(image, camera, place)
    DECORATE[place.kind](image, camera, place, rng)
    # texture: low-frequency shading and a little grain, so surfaces are not flat colour
    shading = cv2.resize(
        rng.normal(1.0, 0.05, (6, 8)).astype(np.float32),
        (camera.width, camera.height_px),
        interpolation=cv2.INTER_CUBIC,
    )
    grain = rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    textured: Image = np.clip(image.astype(np.float32) * shading[:, :, None] + grain, 0, 255).astype(np.uint8)
    return textured


def _ground(place: Place) -> Array:
    """Corners of the ground a shadow can fall on: the floor indoors, the street and the forecourt outdoors."""
    (x0, x1), (z0, z1) = place.x, place.z
    far = 60.0 if place.outdoor else 0.0  # the street beyond the entrance
    return np.array([[x0 - far, 0, z0 - far], [x1 + far, 0, z0 - far], [x1 + far, 0, z1], [x0 - far, 0, z1]])


def ground_mask(place: Place, camera: Camera) -> Image:
    """255 where the camera sees the ground of ``place``, 0 on walls, sky and ceiling."""
    mask = np.zeros((camera.height_px, camera.width), np.uint8)
    _fill(mask, camera, _ground(place), (255, 255, 255))
    return mask


def _floor_lines(image: Image, camera: Camera, place: Place) -> None:
    (x0, x1), (z0, z1) = place.x, place.z
    colour = _shade(PALETTES[place.kind]["floor"], 0.85)
    step = 1.0 if place.kind != "room" else 0.25
    for x in np.arange(math.ceil(x0), x1, step if place.kind == "room" else 1.0):
        _fill(
            image,
            camera,
            np.array([[x - 0.01, 0, z0], [x + 0.01, 0, z0], [x + 0.01, 0, z1], [x - 0.01, 0, z1]]),
            colour,
        )
    if place.kind != "room":
        for z in np.arange(math.ceil(z0), z1, 1.0):
            _fill(
                image,
                camera,
                np.array([[x0, 0, z - 0.01], [x1, 0, z - 0.01], [x1, 0, z + 0.01], [x0, 0, z + 0.01]]),
                colour,
            )


def _door(image: Image, camera: Camera, along: str, fixed: float, at: float, inset: float) -> None:
    _fill(image, camera, _wall_rect(along, fixed, at - 0.5, at + 0.5, 0.0, 2.1, inset), (70, 90, 120))
    _fill(image, camera, _wall_rect(along, fixed, at + 0.3, at + 0.38, 1.0, 1.06, inset * 2), (200, 200, 200))


def _decorate_corridor(image: Image, camera: Camera, place: Place, rng: np.random.Generator) -> None:
    (x0, x1), (z0, z1) = place.x, place.z
    for z in np.arange(z0 + 2.0, z1 - 1.0, 4.0):
        _door(image, camera, "z", x0, float(z + rng.uniform(-0.5, 0.5)), -0.01)
        _door(image, camera, "z", x1, float(z + 2 + rng.uniform(-0.5, 0.5)), 0.01)
    for z in np.arange(z0 + 1.0, z1, 3.0):  # ceiling lights
        mid = (x0 + x1) / 2
        corners = np.array(
            [[mid - 0.3, 2.99, z], [mid + 0.3, 2.99, z], [mid + 0.3, 2.99, z + 1.2], [mid - 0.3, 2.99, z + 1.2]]
        )
        _fill(image, camera, corners, (250, 250, 250))
    _fill(image, camera, _wall_rect("x", z1, (x0 + x1) / 2 - 0.6, (x0 + x1) / 2 + 0.6, 0.0, 2.2, 0.01), (90, 110, 140))


def _decorate_shop(image: Image, camera: Camera, place: Place, rng: np.random.Generator) -> None:
    (x0, x1), (z0, z1) = place.x, place.z
    for side, depth in ((x0, 0.5), (x1, -0.5)):
        for z in np.arange(z0 + 0.5, z1 - 0.5, 1.2):
            front = side + depth
            _fill(image, camera, _wall_rect("z", front, z, z + 1.2, 0.0, 1.9), (90, 90, 95))
            for level in (0.2, 0.75, 1.3):
                for k in range(4):
                    colour = _random_colour(rng, 40, 230)
                    start = z + 0.05 + k * 0.29
                    _fill(
                        image,
                        camera,
                        _wall_rect("z", front, start, start + 0.24, level, level + 0.4, 0.01 if depth > 0 else -0.01),
                        colour,
                    )
    _fill(image, camera, _wall_rect("x", z1, x0 + 0.5, x1 - 0.5, 0.0, 0.9, 0.01), (60, 60, 160))


def _decorate_room(image: Image, camera: Camera, place: Place, rng: np.random.Generator) -> None:
    (x0, x1), (z0, z1) = place.x, place.z
    _fill(image, camera, _wall_rect("x", z1, x0 + 1.0, x0 + 2.4, 1.0, 2.2, 0.01), (235, 215, 180))  # window
    _fill(
        image,
        camera,
        _wall_rect("x", z1, x1 - 2.0, x1 - 1.0, 1.3, 2.0, 0.01),
        _random_colour(rng, 60, 200),
    )
    _door(image, camera, "z", x1, (z0 + z1) / 2, 0.01)
    # a low sofa against the left wall and a table
    _fill(image, camera, _wall_rect("z", x0 + 0.8, z1 - 3.0, z1 - 1.0, 0.0, 0.8), (60, 60, 120))
    _fill(
        image,
        camera,
        np.array([[x0, 0.45, z1 - 3.0], [x0 + 0.8, 0.45, z1 - 3.0], [x0 + 0.8, 0.45, z1 - 1.0], [x0, 0.45, z1 - 1.0]]),
        (80, 80, 150),
    )
    cx, cz = (x0 + x1) / 2 + 1.0, z1 - 1.2
    _fill(
        image,
        camera,
        np.array(
            [
                [cx - 0.6, 0.75, cz - 0.4],
                [cx + 0.6, 0.75, cz - 0.4],
                [cx + 0.6, 0.75, cz + 0.4],
                [cx - 0.6, 0.75, cz + 0.4],
            ]
        ),
        (50, 90, 130),
    )
    _fill(image, camera, _wall_rect("x", cz - 0.4, cx - 0.6, cx + 0.6, 0.0, 0.75), (40, 70, 100))


def _decorate_entrance(image: Image, camera: Camera, place: Place, _rng: np.random.Generator) -> None:
    (x0, x1), (_, z1) = place.x, place.z
    mid = (x0 + x1) / 2
    _fill(image, camera, _wall_rect("x", z1, mid - 1.0, mid + 1.0, 0.0, 2.4, 0.01), (70, 60, 50))  # doorway
    _fill(image, camera, _wall_rect("x", z1, mid - 0.95, mid - 0.02, 0.0, 2.35, 0.02), (120, 110, 100))
    _fill(image, camera, _wall_rect("x", z1, mid + 0.02, mid + 0.95, 0.0, 2.35, 0.02), (120, 110, 100))
    for x in np.arange(x0 + 0.5, x1 - 1.0, 2.0):
        if abs(x + 0.6 - mid) > 1.6:
            for level in (0.9, 4.0):
                _fill(image, camera, _wall_rect("x", z1, x, x + 1.2, level, level + 1.4, 0.01), (150, 120, 90))
    for x in (x0 + 0.3, x1 - 0.3):  # lamp posts
        _fill(
            image,
            camera,
            np.array([[x - 0.05, 0, z1 - 2], [x + 0.05, 0, z1 - 2], [x + 0.05, 3.5, z1 - 2], [x - 0.05, 3.5, z1 - 2]]),
            (40, 40, 40),
        )


DECORATE = {
    "corridor": _decorate_corridor,
    "shop": _decorate_shop,
    "room": _decorate_room,
    "entrance": _decorate_entrance,
}


@dataclass(frozen=True)
class Clutter:
    """Something that sways: a plant, a hanging sign, a curtain, branches."""

    kind: str  # plant, sign, curtain, branches
    x: float
    z: float
    size: float  # metres
    sway: float  # amplitude, radians
    period: float  # seconds
    phase: float

    def draw(self, image: Image, camera: Camera, t: float) -> None:
        angle = self.sway * math.sin(2 * math.pi * (t / self.period + self.phase))
        if self.kind in ("plant", "branches"):
            base = 0.0 if self.kind == "plant" else 1.2
            if self.kind == "plant":
                _fill(
                    image,
                    camera,
                    np.array(
                        [
                            [self.x - 0.15, 0, self.z],
                            [self.x + 0.15, 0, self.z],
                            [self.x + 0.12, 0.35, self.z],
                            [self.x - 0.12, 0.35, self.z],
                        ]
                    ),
                    (40, 70, 120),
                )
                base = 0.35
            leaves = 7
            for i in range(leaves):
                lean = angle * (1 + i / leaves) + (i - leaves / 2) * 0.25
                length = self.size * (0.6 + 0.4 * ((i * 37) % 5) / 5)
                tip = (self.x + length * math.sin(lean), base + length * math.cos(lean), self.z)
                pixels, depth = camera.project(np.array([[self.x, base, self.z], tip]))
                if (depth <= 0.3).any():
                    continue
                width = max(2, round(camera.focal * 0.12 * self.size / depth[0]))
                cv2.line(
                    image,
                    tuple(np.round(pixels[0]).astype(int)),
                    tuple(np.round(pixels[1]).astype(int)),
                    (40, 120 + 10 * (i % 3), 50),
                    width,
                    cv2.LINE_AA,
                )
        elif self.kind == "sign":
            top = 2.8
            hang = np.array([self.x + math.sin(angle) * 0.4, top - math.cos(angle) * 0.4, self.z])
            half, drop = self.size / 2, self.size * 0.4
            corners = hang + np.array([[-half, 0, 0], [half, 0, 0], [half, -drop, 0], [-half, -drop, 0]])
            _fill(image, camera, corners, (30, 140, 30))
        else:  # curtain: a cloth waving in front of a wall
            folds = 6
            points = []
            for i in range(folds + 1):
                u = i / folds
                wave = 0.12 * math.sin(2 * math.pi * (t / self.period + u + self.phase)) * (self.sway / 0.3)
                points.append([self.x + u * self.size + wave, 2.4, self.z - 0.05])
            points += [[p[0] + 0.1 * math.sin(angle + i), 0.3, p[2]] for i, p in enumerate(reversed(points))]
            _fill(image, camera, np.array(points), (90, 60, 150))


def default_clutter(place: Place, rng: np.random.Generator) -> list[Clutter]:
    """The place's usual swaying things."""
    (x0, x1), (z0, z1) = place.x, place.z
    mid_z = (z0 + z1) / 2
    if place.kind == "entrance":
        return [Clutter("branches", x, z1 - 1.0, 1.3, 0.25, 3.0, float(rng.random())) for x in (x0 + 1.0, x1 - 1.0)]
    if place.kind == "room":
        return [
            Clutter("plant", x1 - 0.5, z1 - 0.5, 0.7, 0.15, 4.0, float(rng.random())),
            Clutter("curtain", x0 + 0.9, z1, 1.6, 0.3, 5.0, float(rng.random())),
        ]
    if place.kind == "shop":
        return [Clutter("sign", (x0 + x1) / 2, mid_z, 0.8, 0.2, 3.5, float(rng.random()))]
    return [Clutter("plant", x0 + 0.4, mid_z, 0.8, 0.15, 4.5, float(rng.random()))]


@dataclass(frozen=True)
class Shadow:
    """A soft dark patch drifting across the floor (a cloud, someone passing a lamp off camera)."""

    start: tuple[float, float]
    velocity: tuple[float, float]  # metres per second
    radius: float
    strength: float  # 0..1 darkening at the centre

    def darken(self, image: Image, camera: Camera, t: float, ground: Image) -> None:
        """Darken the part of the patch that lies on ``ground`` (``ground_mask``): beyond a wall the
        floor is hidden, so a patch there must not show through the wall."""
        cx, cz = self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t
        ring = [
            [cx + self.radius * math.cos(a), 0.0, cz + self.radius * 0.6 * math.sin(a)]
            for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)
        ]
        pixels = camera.polygon(np.array(ring))
        if pixels is None:
            return
        height, width = image.shape[:2]
        low, high = pixels.min(axis=0), pixels.max(axis=0)
        soft = int(min(max(3.0, float(min(high - low)) / 4), width / 4)) | 1  # blur width
        # the region the soft shadow covers, cut to the image (near the camera it can be huge)
        x1, y1 = (max(0, int(v) - soft) for v in np.floor(low))
        x2, y2 = (min(limit, int(v) + soft) for v, limit in zip(np.ceil(high), (width, height), strict=True))
        if x2 - x1 < 2 or y2 - y1 < 2:
            return
        mask = np.zeros((y2 - y1, x2 - x1), np.float32)
        cv2.fillPoly(mask, [np.round((pixels - [x1, y1]) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        mask = cv2.GaussianBlur(mask, (soft, soft), 0) * (ground[y1:y2, x1:x2] / np.float32(255))
        region = image[y1:y2, x1:x2]
        region[:] = (region * (1.0 - self.strength * mask)[:, :, None]).astype(np.uint8)
