"""Scenario files: a small JSON description of places, cameras and people's scripts.

```json
{
  "description": "one line",
  "fps": 10, "duration": 30, "resolution": [640, 480], "caption_every": 2.0,
  "places": {"hall": {"kind": "corridor", "x": [-1.5, 1.5], "z": [0, 20]}},
  "cameras": [{"place": "hall", "at": [0, 0.2], "height": 2.6, "yaw": 0, "pitch": 18, "fov": 70,
               "lighting": [["day", 0], ["dusk", 20]], "flicker": 0.0, "shadows": 1, "clutter": true}],
  "people": [{"id": "p1", "shirt": "red", "start": 2, "height": 1.75, "speed": 1.3,
              "script": [{"enter": [0, 19]}, {"walk": [[0, 4]]}, {"hold": "knife"}, {"stand": 3},
                         {"fight": 2}, {"fall": true}, {"lie": 4}, {"leave": true}, {"wait": 5}]}]
}
```

Lighting is a list of [mode, second] keys: day and dusk blend into each other; night (the camera's
grey infrared mode) switches on at its key, as a real camera's IR filter does. ``flicker`` is the
chance per second of a light dip; ``shadows`` how many soft shadows drift over the floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.sim.backdrop import KINDS
from appliance.sim.figure import OBJECTS, SHIRT_COLOURS
from appliance.sim.geometry import Camera, Place

LIGHTING = ("day", "dusk", "night")
STEPS = ("enter", "walk", "stand", "fight", "fall", "lie", "hold", "leave", "wait")


class ScenarioError(ConfigError):
    """A scenario that cannot be found or does not describe a world."""


@dataclass(frozen=True)
class CameraSpec:
    camera: Camera
    place: Place
    lighting: tuple[tuple[str, float], ...]
    flicker: float
    shadows: int
    clutter: bool


@dataclass(frozen=True)
class PersonSpec:
    id: str
    shirt: str
    start: float
    height: float
    speed: float
    script: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fps: float
    duration: float
    width: int
    height: int
    caption_every: float
    cameras: tuple[CameraSpec, ...]
    people: tuple[PersonSpec, ...]

    @property
    def frames(self) -> int:
        return round(self.duration * self.fps)


class _Fields:
    """Typed reads from one JSON object; errors name the scenario and the field's path."""

    def __init__(self, source: str, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: {where or 'the top level'} must be a JSON object")
        self.source, self.where, self.data = source, where, data

    def fail(self, key: str, expected: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.where}{'.' if self.where else ''}{key}: expected {expected}")

    def number(
        self, key: str, default: float | None = None, low: float = float("-inf"), high: float = float("inf")
    ) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.fail(key, f"a number from {low:g} to {high:g}")
        return float(value)

    def text(self, key: str, options: tuple[str, ...] | None = None, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or (options is not None and value not in options):
            raise self.fail(key, f"one of {', '.join(options)}" if options else "a string")
        return value

    def point(self, key: str, value: Any = None) -> tuple[float, float]:
        value = self.data.get(key) if value is None else value
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value)):
            raise self.fail(key, "[x, z] in metres")
        return (float(value[0]), float(value[1]))

    def child(self, key: str, value: Any) -> _Fields:
        return _Fields(self.source, f"{self.where}{'.' if self.where else ''}{key}", value)


def _camera(fields: _Fields, places: dict[str, Place], width: int, height: int) -> CameraSpec:
    place = fields.text("place", tuple(places))
    x, z = fields.point("at")
    lighting = fields.data.get("lighting", [["day", 0]])
    if not (isinstance(lighting, list) and lighting and all(isinstance(k, list) and len(k) == 2 for k in lighting)):
        raise fields.fail("lighting", "a list of [mode, second] pairs")
    keys = []
    for mode, at in lighting:
        if mode not in LIGHTING or isinstance(at, bool) or not isinstance(at, int | float):
            raise fields.fail("lighting", f"[mode, second] pairs with a mode among {', '.join(LIGHTING)}")
        keys.append((str(mode), float(at)))
    camera = Camera(
        x,
        z,
        fields.number("height", 2.6, 0.5, 10.0),
        fields.number("yaw", 0.0, -360.0, 360.0),
        fields.number("pitch", 15.0, -10.0, 80.0),
        fields.number("fov", 70.0, 20.0, 150.0),
        width,
        height,
    )
    clutter = fields.data.get("clutter", True)
    if not isinstance(clutter, bool):
        raise fields.fail("clutter", "true or false")
    shadows = fields.number("shadows", 0, 0, 10)
    return CameraSpec(
        camera,
        places[place],
        tuple(sorted(keys, key=lambda k: k[1])),
        fields.number("flicker", 0.0, 0.0, 10.0),
        int(shadows),
        clutter,
    )


def _person(fields: _Fields) -> PersonSpec:
    script = fields.data.get("script")
    if not isinstance(script, list) or not script:
        raise fields.fail("script", "a list of steps")
    for i, step in enumerate(script):
        if not (isinstance(step, dict) and len(step) in (1, 2) and next(iter(step)) in STEPS):
            raise fields.fail(f"script[{i}]", f"a step: one of {', '.join(STEPS)} (walk may add a speed)")
        kind = next(iter(step))
        value = step[kind]
        here = fields.child(f"script[{i}]", step)
        if kind == "enter":
            here.point("enter")
        elif kind == "walk":
            if not isinstance(value, list) or not value:
                raise here.fail("walk", "a list of [x, z] waypoints")
            for point in value:
                here.point("walk", point)
            if "speed" in step:
                here.number("speed", None, 0.1, 10.0)
        elif kind in ("stand", "fight", "lie", "wait"):
            here.number(kind, None, 0.0, 3600.0)
        elif kind == "hold" and value is not None and value not in OBJECTS:
            raise here.fail("hold", f"one of {', '.join(OBJECTS)}, or null")
    return PersonSpec(
        fields.text("id"),
        fields.text("shirt", tuple(SHIRT_COLOURS)),
        fields.number("start", 0.0, 0.0),
        fields.number("height", 1.75, 1.0, 2.2),
        fields.number("speed", 1.3, 0.1, 10.0),
        tuple(script),
    )


def parse_scenario(name: str, data: Any) -> Scenario:
    """Validate a scenario's JSON; every error names the scenario and the field."""
    top = _Fields(name, "", data)
    resolution = top.data.get("resolution", [640, 480])
    if not (
        isinstance(resolution, list)
        and len(resolution) == 2
        and all(isinstance(v, int) and 32 <= v <= 4096 for v in resolution)
    ):
        raise top.fail("resolution", "[width, height] in pixels")
    width, height = resolution
    places_data = top.data.get("places")
    if not isinstance(places_data, dict) or not places_data:
        raise top.fail("places", "an object of named places")
    places = {}
    for place_name, value in places_data.items():
        fields = top.child(f"places.{place_name}", value)
        x, z = fields.point("x"), fields.point("z")
        if x[0] >= x[1] or z[0] >= z[1]:
            raise fields.fail("x", "[low, high] ranges with low < high for x and z")
        places[place_name] = Place(
            place_name, fields.text("kind", KINDS), x, z, fields.number("wall_height", 3.0, 2.0, 10.0)
        )
    cameras = top.data.get("cameras")
    if not isinstance(cameras, list) or not 1 <= len(cameras) <= 2:
        raise top.fail("cameras", "a list of one or two cameras")
    people = top.data.get("people", [])
    if not isinstance(people, list):
        raise top.fail("people", "a list of people")
    parsed_people = tuple(_person(top.child(f"people[{i}]", p)) for i, p in enumerate(people))
    ids = [p.id for p in parsed_people]
    if len(set(ids)) != len(ids):
        raise top.fail("people", "people with different ids")
    return Scenario(
        name,
        top.text("description", default=""),
        top.number("fps", 10.0, 1.0, 60.0),
        top.number("duration", None, 1.0, 24 * 3600.0),
        width,
        height,
        top.number("caption_every", 2.0, 0.1, 3600.0),
        tuple(_camera(top.child(f"cameras[{i}]", c), places, width, height) for i, c in enumerate(cameras)),
        parsed_people,
    )


def _shipped() -> dict[str, Any]:
    folder = resources.files("appliance.sim") / "scenarios"
    return {entry.name.removesuffix(".json"): entry for entry in folder.iterdir() if entry.name.endswith(".json")}


def list_scenarios() -> list[Scenario]:
    """The scenarios shipped with the appliance, by name."""
    return [load_scenario(name) for name in sorted(_shipped())]


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    shipped = _shipped()
    if name_or_path in shipped:
        text = shipped[name_or_path].read_text(encoding="utf-8")
        name = name_or_path
    else:
        path = Path(name_or_path)
        if path.suffix != ".json" or not path.is_file():
            known = ", ".join(sorted(shipped))
            raise ScenarioError(f"{name_or_path}: no such scenario (shipped: {known}; or give a path to a .json file)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ScenarioError(f"{path}: cannot read it: {error}") from None
        name = path.stem
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScenarioError(f"{name_or_path}: not valid JSON ({error})") from None
    return parse_scenario(name, data)
