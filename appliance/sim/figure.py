"""Articulated people: a pose per action and phase, drawn with OpenCV, and the box they cover.

A pose is a set of joints in body units: the feet at y = 0, the top of the head at y = 1, x
towards where the figure faces. ``turn`` blends a frontal stance (0: shoulders and hips spread
across the image) into a profile (1: limbs swing in the image plane). The figure is drawn at a
pixel scale (its height in pixels) with its feet at a pixel position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from appliance.inference.imaging import Box, Image

ACTIONS = ("walking", "standing", "fighting", "falling", "lying")
OBJECTS = ("knife", "bag", "phone")
FALL_SECONDS = 1.0

Point = tuple[float, float]
Colour = tuple[int, int, int]  # BGR

HEAD_RADIUS = 0.065
NECK = 0.84
SHOULDER = 0.81
HIP = 0.50
LIMB = 0.055  # limb thickness, body units


@dataclass(frozen=True)
class Appearance:
    shirt: Colour
    trousers: Colour
    skin: Colour
    hair: Colour


@dataclass(frozen=True)
class Pose:
    """Joint positions in body units (feet at 0, head top at 1), x towards the facing side."""

    head: Point
    neck: Point
    shoulders: tuple[Point, Point]  # back, front
    elbows: tuple[Point, Point]
    hands: tuple[Point, Point]
    hips: tuple[Point, Point]
    knees: tuple[Point, Point]
    feet: tuple[Point, Point]

    def points(self) -> list[Point]:
        return [self.head, self.neck, *self.shoulders, *self.elbows, *self.hands, *self.hips, *self.knees, *self.feet]


def _limb(origin: Point, angle: float, length: float) -> Point:
    """The end of a limb hanging from ``origin``, swung forward by ``angle`` radians from straight down."""
    return (origin[0] + length * math.sin(angle), origin[1] - length * math.cos(angle))


def pose(action: str, phase: float, turn: float, held: str | None) -> Pose:
    """The pose for ``action`` at ``phase`` (cycles for walking and fighting; 0..1 through a fall)."""
    # frontal: shoulders and hips across the image; profile: the body's depth
    spread = 0.11 * (1.0 - turn) + 0.045 * turn
    hip_spread = 0.065 * (1.0 - turn) + 0.04 * turn
    swing = math.sin(2 * math.pi * phase)
    if action == "walking":
        leg = (0.45 * swing * turn + 0.05 * swing, -0.45 * swing * turn - 0.05 * swing)
        arm = (-0.5 * swing * turn, 0.5 * swing * turn)
        knee_bend = (max(0.0, -swing) * 0.35, max(0.0, swing) * 0.35)
    elif action == "fighting":
        leg = (-0.3, 0.35)
        # alternating punches: one arm strikes forward at shoulder height while the other guards
        strike = max(0.0, math.sin(2 * math.pi * phase * 2))
        arm = (1.2 + 0.3 * (1 - strike), 0.9 + 0.7 * strike)
        knee_bend = (0.2, 0.15)
    else:  # standing, and the upright start of a fall
        leg = (-0.04, 0.04)
        arm = (-0.06, 0.06)
        knee_bend = (0.0, 0.0)

    shoulders = ((-spread, SHOULDER), (spread, SHOULDER))
    hips = ((-hip_spread, HIP), (hip_spread, HIP))
    upper, lower = 0.17, 0.16
    elbows = tuple(_limb(s, a, upper) for s, a in zip(shoulders, arm, strict=True))
    hands = tuple(
        _limb(e, a + (0.5 if action == "fighting" else 0.15), lower) for e, a in zip(elbows, arm, strict=True)
    )
    thigh, shin = 0.26, 0.25
    knees = tuple(_limb(h, a, thigh) for h, a in zip(hips, leg, strict=True))
    feet = tuple(_limb(k, a - b, shin) for k, a, b in zip(knees, leg, knee_bend, strict=True))

    front_shoulder = shoulders[1]
    if held == "knife":  # the front arm raised forward, the blade pointing ahead
        elbow = (front_shoulder[0] + 0.14, front_shoulder[1] + 0.02)
        elbows = (elbows[0], elbow)
        hands = (hands[0], (elbow[0] + 0.14, elbow[1] + 0.04))
    elif held == "phone":  # the hand at the ear
        elbow = (front_shoulder[0] + 0.08, front_shoulder[1] - 0.08)
        elbows = (elbows[0], elbow)
        hands = (hands[0], (0.045 + 0.02 * (1 - turn), 0.91))
    elif held == "bag":  # the arm straight down, a little out
        elbow = _limb(front_shoulder, 0.12, upper)
        elbows = (elbows[0], elbow)
        hands = (hands[0], _limb(elbow, 0.12, lower))

    # lower the body so that the lower foot touches the floor
    lowest = min(feet[0][1], feet[1][1])
    lift = -lowest

    def up(p: Point) -> Point:
        return (p[0], p[1] + lift)

    joints = Pose(
        head=up((0.0, 1.0 - HEAD_RADIUS)),
        neck=up((0.0, NECK)),
        shoulders=(up(shoulders[0]), up(shoulders[1])),
        elbows=(up(elbows[0]), up(elbows[1])),
        hands=(up(hands[0]), up(hands[1])),
        hips=(up(hips[0]), up(hips[1])),
        knees=(up(knees[0]), up(knees[1])),
        feet=(up(feet[0]), up(feet[1])),
    )
    if action in ("falling", "lying"):
        angle = (math.pi / 2) * (1.0 if action == "lying" else min(max(phase, 0.0), 1.0) ** 2)
        return _rotated(joints, angle)
    return joints


def _rotated(joints: Pose, angle: float) -> Pose:
    """The pose tipped forward by ``angle`` about the feet (a fall)."""
    c, s = math.cos(angle), math.sin(angle)

    def rot(p: Point) -> Point:
        # the body falls on its back (the head moves to -x) and keeps its thickness above the floor
        return (p[0] * c - p[1] * s, max(p[0] * s + p[1] * c, 0.0) + LIMB * s)

    def pair(ps: tuple[Point, Point]) -> tuple[Point, Point]:
        return (rot(ps[0]), rot(ps[1]))

    return Pose(
        rot(joints.head),
        rot(joints.neck),
        pair(joints.shoulders),
        pair(joints.elbows),
        pair(joints.hands),
        pair(joints.hips),
        pair(joints.knees),
        pair(joints.feet),
    )


@dataclass(frozen=True)
class Placement:
    """Where a figure goes in the image: feet centre in pixels, height in pixels, facing -1 or +1."""

    feet_x: float
    feet_y: float
    height: float
    facing: int

    def to_pixels(self, p: Point) -> tuple[float, float]:
        return (self.feet_x + self.facing * p[0] * self.height, self.feet_y - p[1] * self.height)


def _ipt(p: tuple[float, float]) -> tuple[int, int]:
    return (round(p[0] * 16), round(p[1] * 16))  # 4 bits of sub-pixel precision for cv2


def _line(image: Image, a: tuple[float, float], b: tuple[float, float], colour: Colour, width: float) -> None:
    cv2.line(image, _ipt(a), _ipt(b), colour, max(1, round(width)), cv2.LINE_AA, shift=4)


@dataclass(frozen=True)
class _Stroke:
    """One thing drawn: a thick line, a filled polygon, a disc or the hair (an upper half ellipse)."""

    kind: str  # line, polygon, disc, hair
    points: tuple[tuple[float, float], ...]
    size: float  # line width, or radius
    colour: Colour

    def reach(self) -> tuple[float, float, float, float]:
        """A box sure to hold every pixel the stroke touches."""
        xy = np.array(self.points)
        pad = {"line": max(1, round(self.size)) / 2, "polygon": 0.0}.get(self.kind, self.size) + 4.0
        return (xy[:, 0].min() - pad, xy[:, 1].min() - pad, xy[:, 0].max() + pad, xy[:, 1].max() + pad)

    def paint(self, image: Image, colour: Colour | None = None, offset: tuple[float, float] = (0.0, 0.0)) -> None:
        colour = colour or self.colour
        points = [(x - offset[0], y - offset[1]) for x, y in self.points]
        if self.kind == "line":
            _line(image, points[0], points[1], colour, self.size)
        elif self.kind == "polygon":
            polygon = np.round(np.array(points) * 16).astype(np.int32)
            cv2.fillConvexPoly(image, polygon, colour, cv2.LINE_AA, shift=4)
        elif self.kind == "disc":
            cv2.circle(image, _ipt(points[0]), round(self.size * 16), colour, -1, cv2.LINE_AA, shift=4)
        else:
            centre = (points[0][0], points[0][1] - self.size * 0.25)
            axes = (round(self.size * 16), round(self.size * 0.8 * 16))
            cv2.ellipse(image, _ipt(centre), axes, 0, 180, 360, colour, -1, cv2.LINE_AA, shift=4)


def _strokes(joints: Pose, placement: Placement, look: Appearance) -> list[_Stroke]:
    """The body, back to front: back limbs, torso, front leg, shoes, head, front arm."""
    px = placement.to_pixels
    limb = max(1.0, LIMB * placement.height)
    back, front = 0, 1
    sleeve_back = _shade(look.shirt, 0.75)
    leg_back = _shade(look.trousers, 0.8)

    def line(a: Point, b: Point, colour: Colour, width: float) -> _Stroke:
        return _Stroke("line", (px(a), px(b)), width, colour)

    torso = np.array([px(joints.shoulders[0]), px(joints.shoulders[1]), px(joints.hips[1]), px(joints.hips[0])])
    centre = torso.mean(axis=0)
    grown = centre + (torso - centre) + np.sign(torso - centre) * limb * 0.6  # a torso wider than its joints
    strokes = [
        line(joints.shoulders[back], joints.elbows[back], sleeve_back, limb),
        line(joints.elbows[back], joints.hands[back], look.skin, limb * 0.85),
        line(joints.hips[back], joints.knees[back], leg_back, limb * 1.15),
        line(joints.knees[back], joints.feet[back], leg_back, limb),
        _Stroke("polygon", tuple((float(x), float(y)) for x, y in grown), 0.0, look.shirt),
        _Stroke(
            "line", (px(joints.neck), (float(torso[:2, 0].mean()), float(torso[:2, 1].mean()))), limb * 1.6, look.shirt
        ),
        line(joints.hips[front], joints.knees[front], look.trousers, limb * 1.15),
        line(joints.knees[front], joints.feet[front], look.trousers, limb),
    ]
    for foot in joints.feet:
        heel = px(foot)
        strokes.append(
            _Stroke("line", (heel, (heel[0] + placement.facing * limb * 0.6, heel[1])), limb * 0.8, (30, 30, 30))
        )
    strokes.append(_Stroke("disc", (px(joints.head),), HEAD_RADIUS * placement.height, look.skin))
    strokes.append(_Stroke("hair", (px(joints.head),), HEAD_RADIUS * placement.height, look.hair))
    strokes.append(line(joints.shoulders[front], joints.elbows[front], look.shirt, limb))
    strokes.append(line(joints.elbows[front], joints.hands[front], look.skin, limb * 0.85))
    return strokes


def _shade(colour: Colour, factor: float) -> Colour:
    return (int(colour[0] * factor), int(colour[1] * factor), int(colour[2] * factor))


COVERED = 64  # of 255: a pixel at least a quarter covered by the body belongs to it


@dataclass(frozen=True)
class Silhouette:
    """The pixels a drawn body covers: a mask placed at ``left``, ``top`` of the image."""

    left: int
    top: int
    mask: npt.NDArray[np.bool_]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> Box:
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:  # too thin to cover a quarter of any pixel: a pixel where it is
            height, width = self.mask.shape
            return (self.left + width / 2, self.top + height / 2, self.left + width / 2 + 1, self.top + height / 2 + 1)
        return (
            float(self.left + xs.min()),
            float(self.top + ys.min()),
            float(self.left + xs.max() + 1),
            float(self.top + ys.max() + 1),
        )


def silhouette(joints: Pose, placement: Placement) -> Silhouette:
    """The body's pixels (held objects aside), from the very strokes ``draw`` paints."""
    strokes = _strokes(joints, placement, _PLAIN)
    reach = np.array([stroke.reach() for stroke in strokes])
    x0, y0 = (int(v) for v in np.floor(reach[:, :2].min(axis=0)))
    x1, y1 = (int(v) for v in np.ceil(reach[:, 2:].max(axis=0)))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    for stroke in strokes:
        stroke.paint(mask, (255, 255, 255), (float(x0), float(y0)))
    return Silhouette(x0, y0, mask >= COVERED)


def draw(image: Image, joints: Pose, placement: Placement, look: Appearance, held: str | None) -> Box | None:
    """Draw the figure and what it holds; returns the box of what it holds (None: nothing)."""
    for stroke in _strokes(joints, placement, look):
        stroke.paint(image)
    if held is None:
        return None
    px = placement.to_pixels
    return _draw_object(
        image, held, px(joints.hands[1]), px(joints.elbows[1]), placement, max(1.0, LIMB * placement.height)
    )


def _draw_object(
    image: Image, held: str, hand: tuple[float, float], elbow: tuple[float, float], placement: Placement, limb: float
) -> Box:
    """Draw ``held`` in the hand; returns its box in pixels (where it was drawn, with the anti-aliased
    fringe, unclipped)."""
    h = placement.height
    if held == "knife":
        direction = np.subtract(hand, elbow)
        direction = direction / (np.linalg.norm(direction) or 1.0)
        grip_end = np.add(hand, direction * 0.04 * h)
        tip = np.add(grip_end, direction * 0.16 * h)
        _line(image, hand, tuple(grip_end), (25, 25, 25), limb * 0.9)
        _line(image, tuple(grip_end), tuple(tip), (235, 235, 240), max(1.5, limb * 0.75))
        half = max(1.5, limb * 0.9) / 2  # the stroke's half width
        xs, ys = (hand[0], float(tip[0])), (hand[1], float(tip[1]))
        return _fringed((min(xs) - half, min(ys) - half, max(xs) + half, max(ys) + half))
    if held == "bag":
        width, height = 0.14 * h, 0.13 * h
        x = hand[0] - width / 2
        cv2.rectangle(
            image, _ipt((x, hand[1])), _ipt((x + width, hand[1] + height)), (40, 70, 110), -1, cv2.LINE_AA, shift=4
        )
        strap = limb * 0.5
        _line(image, (hand[0], hand[1]), (hand[0], hand[1] + 0.02 * h), (20, 40, 60), strap)
        return _fringed((x, hand[1] - max(1, round(strap)) / 2, x + width, hand[1] + height))
    size = (0.035 * h, 0.065 * h)  # a phone
    corner, far = (hand[0] - size[0] / 2, hand[1] - size[1] / 2), (hand[0] + size[0] / 2, hand[1] + size[1] / 2)
    cv2.rectangle(image, _ipt(corner), _ipt(far), (20, 20, 20), -1, cv2.LINE_AA, shift=4)
    return _fringed((corner[0], corner[1], far[0], far[1]))


def _fringed(box: Box) -> Box:
    """``box`` and the pixel of anti-aliased edge around it."""
    return (box[0] - 1.0, box[1] - 1.0, box[2] + 1.0, box[3] + 1.0)


def walking_phase(distance: float, height_m: float) -> float:
    """Gait cycles walked over ``distance`` metres (a stride is about 0.8 body heights)."""
    return distance / (0.8 * height_m)


SHIRT_COLOURS: dict[str, Colour] = {
    "red": (40, 40, 200),
    "blue": (190, 80, 30),
    "green": (50, 160, 40),
    "yellow": (40, 200, 220),
    "white": (235, 235, 235),
    "black": (35, 35, 35),
}


_PLAIN = Appearance((128, 128, 128), (128, 128, 128), (128, 128, 128), (128, 128, 128))  # shapes only


def random_appearance(rng: np.random.Generator, shirt: str) -> Appearance:
    skins = [(150, 185, 225), (110, 150, 200), (70, 105, 150), (50, 75, 110)]
    hairs = [(20, 20, 25), (30, 50, 90), (60, 110, 160), (160, 160, 160)]
    trousers = [(60, 50, 40), (90, 60, 30), (40, 40, 40), (120, 120, 110), (140, 110, 70)]
    pick = rng.integers
    return Appearance(
        SHIRT_COLOURS[shirt],
        trousers[int(pick(len(trousers)))],
        skins[int(pick(len(skins)))],
        hairs[int(pick(len(hairs)))],
    )
