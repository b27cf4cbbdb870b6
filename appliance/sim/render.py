"""Drawing a camera's view of the world, frame by frame, with the truth of every frame.

A ``Stage`` is one camera in one place: its still backdrop, its swaying clutter, its drifting
shadows and its lighting. ``Stage.render`` draws people on it at a moment and returns the image
and what is true about it. ``Renderer`` runs a scenario's camera: frame ``i`` is the same image
whatever order frames are asked in, since every random draw comes from (seed, camera, frame).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from appliance.inference.imaging import Box, Image
from appliance.sim import captions
from appliance.sim.backdrop import Clutter, Shadow, default_clutter, ground_mask, paint
from appliance.sim.figure import Placement, Silhouette, draw, pose, silhouette
from appliance.sim.geometry import NEAR, Camera, Place
from appliance.sim.scenario import CameraSpec, Scenario
from appliance.sim.world import Actor, World

MIN_HEIGHT = 10  # pixels: a smaller person is not expected to be found
# Share of the body showing (inside the image, not hidden by others) below which a person need
# not be found.
MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class Light:
    """The light and the sensor at one moment."""

    mode: str  # day, dusk or night (grey infrared)
    gain: float
    tint: tuple[float, float, float]  # B, G, R
    noise: float  # standard deviation of the sensor noise, grey levels


LIGHTS = {
    "day": Light("day", 1.0, (1.0, 1.0, 1.0), 2.0),
    "dusk": Light("dusk", 0.55, (0.82, 0.92, 1.1), 5.0),
    "night": Light("night", 0.75, (1.0, 1.0, 1.0), 9.0),
}


def light_at(keys: Sequence[tuple[str, float]], t: float) -> Light:
    """Day and dusk blend between their keys; night holds from its key to the next."""
    current = keys[0]
    for key in keys:
        if key[1] <= t:
            current = key
    following = next((k for k in keys if k[1] > t), None)
    light = LIGHTS[current[0]]
    if following is None or current[0] == "night" or following[0] == "night":
        return light
    other = LIGHTS[following[0]]
    w = (t - current[1]) / (following[1] - current[1])
    tint = tuple(a + (b - a) * w for a, b in zip(light.tint, other.tint, strict=True))
    return Light(
        light.mode if w < 0.5 else other.mode,
        light.gain + (other.gain - light.gain) * w,
        (tint[0], tint[1], tint[2]),
        light.noise + (other.noise - light.noise) * w,
    )


@dataclass(frozen=True)
class PersonTruth:
    id: str
    box: Box  # x1 y1 x2 y2 in pixels, clipped to the image
    action: str
    held: str | None
    shirt: str
    visible: float  # share of the body's pixels that show: inside the image and not behind someone nearer
    ignore: bool  # too small or mostly outside: a detector need not find it, nor is it a false positive
    held_box: Box | None = None  # what they hold, where it was drawn (clipped to the image); None: nothing shows

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PersonTruth:
        x1, y1, x2, y2 = (float(v) for v in data["box"])
        held_box = data.get("held_box")  # absent in truth files written before objects had boxes
        return cls(
            data["id"],
            (x1, y1, x2, y2),
            data["action"],
            data["held"],
            data["shirt"],
            data["visible"],
            data["ignore"],
            None
            if held_box is None
            else (float(held_box[0]), float(held_box[1]), float(held_box[2]), float(held_box[3])),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "box": [round(v, 1) for v in self.box],
            "action": self.action,
            "held": self.held,
            "shirt": self.shirt,
            "visible": round(self.visible, 3),
            "ignore": self.ignore,
            "held_box": None if self.held_box is None else [round(v, 1) for v in self.held_box],
        }


@dataclass(frozen=True)
class FrameTruth:
    camera: int
    index: int
    time: float
    light: str
    place: str  # the kind of place
    people: tuple[PersonTruth, ...]
    caption: str | None  # the true caption, on keyframes

    @property
    def counted(self) -> list[PersonTruth]:
        return [p for p in self.people if not p.ignore]

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "index": self.index,
            "time": round(self.time, 4),
            "light": self.light,
            "people": [p.to_json() for p in self.people],
        }
        if self.caption is not None:
            data["caption"] = self.caption
        return data


def true_caption(people: Sequence[PersonTruth], place: str, light: str) -> str:
    seen = [captions.Seen(p.action, p.held, p.shirt) for p in people if not p.ignore]
    return captions.caption(seen, place, colour_visible=light != "night")


NOISE_VARIANTS = 6


@functools.cache
def _noise_bank(shape: tuple[int, ...], level: int) -> list[tuple[Image, Image]]:
    """Sensor noise of standard deviation ``level``, drawn once per image size and kept: drawing it
    every frame costs more than the rest of the frame. Each variant is a (plus, minus) pair."""
    rng = np.random.default_rng([level, *shape])
    pairs = []
    for _ in range(NOISE_VARIANTS):
        noise = np.round(rng.normal(0, level, shape)).astype(np.int16)
        pairs.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))
    return pairs


def add_noise(image: Image, sigma: float, pick: int) -> None:
    """Add sensor noise in place, with saturating OpenCV arithmetic."""
    plus, minus = _noise_bank(image.shape, max(1, round(sigma)))[pick % NOISE_VARIANTS]
    cv2.add(image, plus, dst=image)
    cv2.subtract(image, minus, dst=image)


class Stage:
    """One camera in one place: everything but the people."""

    def __init__(
        self,
        camera: Camera,
        place: Place,
        lighting: Sequence[tuple[str, float]],
        flicker: float,
        clutter: Sequence[Clutter],
        shadows: Sequence[Shadow],
        seed: int,
    ) -> None:
        self.camera, self.place = camera, place
        self.lighting, self.flicker = tuple(lighting), flicker
        self.clutter, self.shadows = tuple(clutter), tuple(shadows)
        self.backdrop = paint(place, camera, np.random.default_rng([seed, 1]))
        self._ground = ground_mask(place, camera)
        self._drift_phase = float(np.random.default_rng([seed, 2]).random()) * 2 * math.pi

    @classmethod
    def from_spec(cls, spec: CameraSpec, seed: int, duration: float) -> Stage:
        rng = np.random.default_rng([seed, 3])
        clutter = default_clutter(spec.place, rng) if spec.clutter else []
        return cls(
            spec.camera,
            spec.place,
            spec.lighting,
            spec.flicker,
            clutter,
            random_shadows(spec.place, spec.shadows, duration, rng),
            seed,
        )

    def render(
        self, actors: Sequence[Actor], t: float, rng: np.random.Generator
    ) -> tuple[Image, tuple[PersonTruth, ...], Light]:
        """The image at time ``t`` with ``actors`` on stage; ``rng`` draws this frame's flicker and noise."""
        image = self.backdrop.copy()
        for thing in self.clutter:
            thing.draw(image, self.camera, t)
        for shadow in self.shadows:
            shadow.darken(image, self.camera, t, self._ground)
        # People are drawn far to near; each also paints its number into a label map, so that what
        # is left of a person's number is what of them shows (not cut off, not hidden behind others).
        height, width = image.shape[:2]
        label = np.zeros((height, width), np.uint8)
        drawn: list[tuple[Actor, Silhouette, Box | None]] = []
        for actor, placement in self._placed(actors):
            joints = pose(actor.action, actor.phase, self._turn(actor), actor.held)
            shape = silhouette(joints, placement)
            x1, y1, x2, y2 = shape.box
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height or len(drawn) == 255:
                continue
            held_box = draw(image, joints, placement, actor.look, actor.held)
            drawn.append((actor, shape, held_box))
            _paint_label(label, shape, len(drawn))
        showing = np.bincount(label.ravel(), minlength=len(drawn) + 1)
        truths = []
        for number, (actor, shape, held_box) in enumerate(drawn, start=1):
            box = _clipped(shape.box, width, height)
            visible = float(showing[number]) / max(shape.area, 1)
            small = box[3] - box[1] < MIN_HEIGHT and box[2] - box[0] < MIN_HEIGHT
            ignore = visible < MIN_VISIBLE or small
            held = _clipped(held_box, width, height) if held_box is not None else None
            shows = held is not None and held[2] > held[0] and held[3] > held[1]
            truths.append(
                PersonTruth(
                    actor.id, box, actor.action, actor.held, actor.shirt, visible, ignore, held if shows else None
                )
            )
        light = self._light(t, rng)
        self._expose(image, light, rng)
        return image, tuple(truths), light

    def _placed(self, actors: Sequence[Actor]) -> list[tuple[Actor, Placement]]:
        """Actors in front of the camera with where they go in the image, the farthest first."""
        placed = []
        for actor in actors:
            if not self.place.contains(actor.x, actor.z, margin=-0.5):
                continue  # behind a wall, or beyond the place: cameras see their own place only
            points = np.array(
                [
                    [actor.x, 0.0, actor.z],
                    [actor.x, actor.height, actor.z],
                    [actor.x + actor.direction[0] * 0.3, 0.0, actor.z + actor.direction[1] * 0.3],
                ]
            )
            pixels, depth = self.camera.project(points)
            if depth[0] <= NEAR * 2:
                continue
            height = float(pixels[0, 1] - pixels[1, 1])
            facing = 1 if pixels[2, 0] >= pixels[0, 0] else -1
            placed.append((depth[0], actor, Placement(float(pixels[0, 0]), float(pixels[0, 1]), height, facing)))
        placed.sort(key=lambda item: -item[0])
        return [(actor, placement) for _, actor, placement in placed]

    def _turn(self, actor: Actor) -> float:
        """0 when the person faces the camera or away from it, 1 in profile."""
        across, _, along = self.camera.rotate(np.array([actor.direction[0], 0.0, actor.direction[1]]))
        return float(abs(across) / (abs(across) + abs(along) + 1e-9))

    def _light(self, t: float, rng: np.random.Generator) -> Light:
        light = light_at(self.lighting, t)
        gain = light.gain * (1.0 + 0.05 * math.sin(2 * math.pi * t / 23.0 + self._drift_phase))  # auto exposure hunting
        if self.flicker and rng.random() < self.flicker / 10.0:  # frames of a fluorescent dip
            gain *= float(rng.uniform(0.7, 0.9))
        return Light(light.mode, gain, light.tint, light.noise)

    def _expose(self, image: Image, light: Light, rng: np.random.Generator) -> None:
        if light.mode == "night":
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            grey = cv2.convertScaleAbs(grey, alpha=0.7 * light.gain, beta=35)  # flat, lifted infrared look
            cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR, dst=image)
        else:
            cv2.transform(image, np.diag([light.gain * c for c in light.tint]).astype(np.float32), dst=image)
        add_noise(image, light.noise, int(rng.integers(1 << 16)))


def _clipped(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


def _paint_label(label: npt.NDArray[np.uint8], shape: Silhouette, number: int) -> None:
    """Write ``number`` where ``shape`` covers ``label`` (the part inside the image)."""
    height, width = label.shape
    mask_height, mask_width = shape.mask.shape
    fx1, fy1 = max(shape.left, 0), max(shape.top, 0)
    fx2, fy2 = min(shape.left + mask_width, width), min(shape.top + mask_height, height)
    if fx2 <= fx1 or fy2 <= fy1:
        return
    part = shape.mask[fy1 - shape.top : fy2 - shape.top, fx1 - shape.left : fx2 - shape.left]
    label[fy1:fy2, fx1:fx2][part] = number


def random_shadows(place: Place, count: int, duration: float, rng: np.random.Generator) -> list[Shadow]:
    """Shadows that cross the place over ``duration`` seconds, at different times."""
    shadows = []
    (x0, x1), (z0, z1) = place.x, place.z
    for _ in range(count):
        speed = float(rng.uniform(0.3, 1.2))
        crossing = (x1 - x0 + 6.0) / speed
        start_x = x0 - 3.0 - speed * float(rng.uniform(0, max(duration - crossing, 1.0)))
        shadows.append(
            Shadow(
                (start_x, float(rng.uniform(z0, z1))),
                (speed, float(rng.uniform(-0.2, 0.2))),
                float(rng.uniform(0.8, 2.0)),
                float(rng.uniform(0.25, 0.45)),
            )
        )
    return shadows


@dataclass(frozen=True)
class SimFrame:
    image: Image
    truth: FrameTruth


class Renderer:
    """Camera ``view`` of a scenario: frames in order, or any frame by index."""

    def __init__(self, scenario: Scenario, view: int = 0, seed: int = 0) -> None:
        if not 0 <= view < len(scenario.cameras):
            raise ValueError(f"scenario {scenario.name} has {len(scenario.cameras)} camera(s); no view {view}")
        self.scenario, self.view, self.seed = scenario, view, seed
        self.world = World(scenario, seed)
        spec = scenario.cameras[view]
        self.stage = Stage.from_spec(spec, seed * 10 + view, scenario.duration)
        self.keyframe_every = max(1, round(scenario.caption_every * scenario.fps))

    def frame(self, index: int) -> SimFrame:
        t = index / self.scenario.fps
        rng = np.random.default_rng([self.seed, self.view, index])
        image, people, light = self.stage.render(self.world.actors_at(t), t, rng)
        place = self.stage.place.kind
        caption = true_caption(people, place, light.mode) if index % self.keyframe_every == 0 else None
        return SimFrame(image, FrameTruth(self.view, index, t, light.mode, place, people, caption))

    def __iter__(self) -> Iterator[SimFrame]:
        for index in range(self.scenario.frames):
            yield self.frame(index)
