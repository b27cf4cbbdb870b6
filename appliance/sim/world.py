"""People in the world: each script compiled to a timeline, and where everyone is at a time."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np

from appliance.sim.figure import FALL_SECONDS, Appearance, random_appearance, walking_phase
from appliance.sim.scenario import PersonSpec, Scenario, ScenarioError

FIGHT_CYCLES_PER_SECOND = 1.6


@dataclass(frozen=True)
class Actor:
    """A person on stage at one moment."""

    id: str
    look: Appearance
    shirt: str
    height: float  # metres
    x: float
    z: float
    action: str  # walking, standing, fighting, falling, lying
    phase: float
    held: str | None
    direction: tuple[float, float]  # where the person faces, on the floor


@dataclass(frozen=True)
class _Step:
    start: float
    end: float
    action: str
    origin: tuple[float, float]
    target: tuple[float, float]
    held: str | None
    direction: tuple[float, float]
    walked: float  # metres walked before this step


def _unit(dx: float, dz: float, fallback: tuple[float, float]) -> tuple[float, float]:
    length = math.hypot(dx, dz)
    return (dx / length, dz / length) if length > 1e-9 else fallback


class Timeline:
    """One person's script as timed steps; off stage before entering, after leaving, while waiting."""

    def __init__(self, spec: PersonSpec, look: Appearance, source: str) -> None:
        self.spec, self.look = spec, look
        self.steps: list[_Step] = []
        t, position, held, walked = spec.start, None, None, 0.0
        direction = (0.0, -1.0)
        on_stage = False
        for index, step in enumerate(spec.script):
            kind, value = next(iter(step.items()))
            if kind in ("walk", "stand", "fight", "fall", "lie") and not on_stage:
                raise ScenarioError(
                    f"{source}: people[{spec.id}].script[{index}]: {kind} before enter (or after leave)"
                )
            if kind == "enter":
                position, on_stage = (float(value[0]), float(value[1])), True
            elif kind == "leave":
                on_stage = False
            elif kind == "hold":
                held = value
            elif kind == "walk":
                assert position is not None
                speed = float(step.get("speed", spec.speed))
                for x, z in value:
                    target = (float(x), float(z))
                    distance = math.dist(position, target)
                    direction = _unit(target[0] - position[0], target[1] - position[1], direction)
                    end = t + distance / speed
                    self.steps.append(_Step(t, end, "walking", position, target, held, direction, walked))
                    t, position, walked = end, target, walked + distance
            else:
                assert kind in ("stand", "fight", "fall", "lie", "wait")
                seconds = FALL_SECONDS if kind == "fall" else float(value)
                action = {
                    "stand": "standing",
                    "fight": "fighting",
                    "fall": "falling",
                    "lie": "lying",
                    "wait": "standing",
                }[kind]
                if on_stage and position is not None:
                    self.steps.append(_Step(t, t + seconds, action, position, position, held, direction, walked))
                t += seconds
        if on_stage and position is not None:  # the person stays until the end
            last = self.steps[-1].action if self.steps else "standing"
            final = "lying" if last in ("falling", "lying") else "standing"
            self.steps.append(_Step(t, math.inf, final, position, position, held, direction, walked))

    def at(self, t: float) -> Actor | None:
        for step in self.steps:
            if step.start <= t < step.end:
                return self._actor(step, t)
        return None

    def _actor(self, step: _Step, t: float) -> Actor:
        elapsed = t - step.start
        x, z = step.origin
        phase = 0.0
        if step.action == "walking":
            fraction = elapsed / (step.end - step.start) if step.end > step.start else 1.0
            x += (step.target[0] - x) * fraction
            z += (step.target[1] - z) * fraction
            phase = walking_phase(step.walked + math.dist(step.origin, (x, z)), self.spec.height)
        elif step.action == "fighting":
            phase = elapsed * FIGHT_CYCLES_PER_SECOND
        elif step.action == "falling":
            phase = elapsed / FALL_SECONDS
        return Actor(
            self.spec.id,
            self.look,
            self.spec.shirt,
            self.spec.height,
            x,
            z,
            step.action,
            phase,
            step.held,
            step.direction,
        )


def appearance_for(spec: PersonSpec, seed: int) -> Appearance:
    """A person's look: the scenario's shirt, the rest drawn from the seed and the person's id."""
    return random_appearance(np.random.default_rng([seed, zlib.crc32(spec.id.encode())]), spec.shirt)


class World:
    """Everyone in a scenario, for one seed."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.timelines = [Timeline(p, appearance_for(p, seed), scenario.name) for p in scenario.people]

    def actors_at(self, t: float) -> list[Actor]:
        actors = [a for a in (timeline.at(t) for timeline in self.timelines) if a is not None]
        return face_opponents(actors)


def face_opponents(actors: list[Actor]) -> list[Actor]:
    """Fighters turn towards the nearest other fighter."""
    fighters = [a for a in actors if a.action == "fighting"]
    result = []
    for actor in actors:
        others = [f for f in fighters if f is not actor]
        if actor.action != "fighting" or not others:
            result.append(actor)
            continue
        other = min(others, key=lambda f: math.dist((f.x, f.z), (actor.x, actor.z)))
        result.append(replace(actor, direction=_unit(other.x - actor.x, other.z - actor.z, actor.direction)))
    return result
