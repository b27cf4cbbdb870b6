"""Random moments of the world, for training and held-out sets: any place, camera, light and people.

Stages (a camera in a place, with its backdrop) cost tens of milliseconds to paint, so a set of
snapshots shares a pool of them; people are drawn afresh on every snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from appliance.inference.imaging import Image
from appliance.sim.backdrop import KINDS, default_clutter
from appliance.sim.figure import SHIRT_COLOURS, random_appearance
from appliance.sim.geometry import Camera, Place
from appliance.sim.render import FrameTruth, Stage, random_shadows, true_caption
from appliance.sim.world import Actor, face_opponents

LIGHT_MODES = ("day", "dusk", "night")
LIGHT_WEIGHTS = (0.55, 0.25, 0.2)
PEOPLE_COUNTS = (0, 1, 2, 3, 4, 5)
PEOPLE_WEIGHTS = (0.13, 0.42, 0.27, 0.1, 0.05, 0.03)
# what a person does: (action, held object, weight); a fight takes two
BEHAVIOURS: tuple[tuple[str, str | None, float], ...] = (
    ("walking", None, 0.30),
    ("standing", None, 0.18),
    ("fighting", None, 0.12),
    ("falling", None, 0.05),
    ("lying", None, 0.07),
    ("walking", "knife", 0.06),
    ("standing", "knife", 0.06),
    ("walking", "bag", 0.06),
    ("standing", "bag", 0.03),
    ("walking", "phone", 0.03),
    ("standing", "phone", 0.04),
)


def random_place(rng: np.random.Generator, kind: str) -> Place:
    if kind == "corridor":
        return Place(
            "corridor",
            kind,
            (-float(rng.uniform(1.2, 2.0)), float(rng.uniform(1.2, 2.0))),
            (0.0, float(rng.uniform(12, 24))),
        )
    if kind == "shop":
        half = float(rng.uniform(1.6, 2.6))
        return Place("shop", kind, (-half, half), (0.0, float(rng.uniform(10, 18))))
    if kind == "room":
        return Place("room", kind, (0.0, float(rng.uniform(5, 9))), (0.0, float(rng.uniform(5, 9))))
    half = float(rng.uniform(4, 7))
    return Place("entrance", kind, (-half, half), (0.0, float(rng.uniform(8, 14))))


def random_camera(rng: np.random.Generator, place: Place, width: int, height: int) -> Camera:
    (x0, x1), (z0, z1) = place.x, place.z
    if place.kind == "room":  # a corner, looking across the room
        corner_x = x0 + 0.3 if rng.random() < 0.5 else x1 - 0.3
        x, z = corner_x, z0 + 0.3
        target = ((x0 + x1) / 2, (z0 + z1) / 2)
    else:  # an end, looking along
        x, z = float(rng.uniform(x0 + 0.2, x1 - 0.2)) * 0.5, z0 - (1.0 if place.outdoor else -0.2)
        target = ((x0 + x1) / 2, z1)
    yaw = math.degrees(math.atan2(target[0] - x, target[1] - z)) + float(rng.normal(0, 5))
    return Camera(
        x, z, float(rng.uniform(2.2, 3.4)), yaw, float(rng.uniform(12, 28)), float(rng.uniform(60, 90)), width, height
    )


def random_stage(rng: np.random.Generator, width: int, height: int, seed: int) -> Stage:
    place = random_place(rng, str(rng.choice(KINDS)))
    camera = random_camera(rng, place, width, height)
    mode = str(rng.choice(LIGHT_MODES, p=LIGHT_WEIGHTS))
    clutter = default_clutter(place, rng)
    shadows = random_shadows(place, int(rng.integers(0, 4)), 60.0, rng)
    return Stage(camera, place, [(mode, 0.0)], 0.0, clutter, shadows, seed)


def _position(rng: np.random.Generator, stage: Stage) -> tuple[float, float] | None:
    """A floor point of the place that the camera sees, 1 to 16 metres away."""
    (x0, x1), (z0, z1) = stage.place.x, stage.place.z
    camera = stage.camera
    for _ in range(50):
        x, z = float(rng.uniform(x0 + 0.3, x1 - 0.3)), float(rng.uniform(z0 + 0.3, z1 - 0.3))
        pixels, depth = camera.project(np.array([[x, 0.0, z], [x, 1.8, z]]))
        if not 1.0 < depth[0] < 16.0:
            continue
        u, v = pixels[0]
        # the feet may be a little below the image, the head must be inside it
        if -20 < u < camera.width + 20 and pixels[1, 1] > 0 and v < camera.height_px * 1.1:
            return x, z
    return None


def random_actors(rng: np.random.Generator, stage: Stage) -> list[Actor]:
    count = int(rng.choice(PEOPLE_COUNTS, p=PEOPLE_WEIGHTS))
    weights = np.array([b[2] for b in BEHAVIOURS])
    actors: list[Actor] = []
    while len(actors) < count:
        spot = _position(rng, stage)
        if spot is None:
            break
        action, held, _ = BEHAVIOURS[int(rng.choice(len(BEHAVIOURS), p=weights / weights.sum()))]
        if action == "fighting" and len(actors) + 2 > count:
            action = "standing"
        angle = float(rng.uniform(0, 2 * math.pi))
        direction = (math.cos(angle), math.sin(angle))
        phase = float(rng.random()) if action != "lying" else 1.0
        actors.append(_actor(rng, len(actors), spot, action, held, direction, phase))
        if action == "fighting":  # the opponent, an arm's length away
            gap = float(rng.uniform(0.55, 0.8))
            other = (spot[0] + direction[0] * gap, spot[1] + direction[1] * gap)
            actors.append(
                _actor(rng, len(actors), other, "fighting", None, (-direction[0], -direction[1]), phase + 0.5)
            )
    return face_opponents(actors)


def _actor(
    rng: np.random.Generator,
    number: int,
    spot: tuple[float, float],
    action: str,
    held: str | None,
    direction: tuple[float, float],
    phase: float,
) -> Actor:
    shirt = str(rng.choice(list(SHIRT_COLOURS)))
    return Actor(
        f"p{number}",
        random_appearance(rng, shirt),
        shirt,
        float(rng.uniform(1.55, 1.95)),
        spot[0],
        spot[1],
        action,
        phase,
        held,
        direction,
    )


@dataclass(frozen=True)
class Snapshot:
    image: Image
    truth: FrameTruth


def snapshots(
    seed: int, count: int, width: int = 640, height: int = 480, stages: int = 200, nobody: bool = False
) -> Iterator[Snapshot]:
    """``count`` random moments, the same for the same arguments; with ``nobody``, empty ones (for a
    detector to learn what is not a person: shadows, clutter, furniture at night)."""
    pool_rng = np.random.default_rng([seed, 0])
    pool = [random_stage(pool_rng, width, height, seed * 1000 + i) for i in range(min(stages, count))]
    for index in range(count):
        rng = np.random.default_rng([seed, 1, index])
        stage = pool[int(rng.integers(len(pool)))]
        t = float(rng.uniform(0, 60))
        image, people, light = stage.render([] if nobody else random_actors(rng, stage), t, rng)
        caption = true_caption(people, stage.place.kind, light.mode)
        yield Snapshot(image, FrameTruth(0, index, t, light.mode, stage.place.kind, people, caption))
