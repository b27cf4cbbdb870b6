"""The synthetic scenes the benchmark runs the service on, and the recorded frames it times models on.

One room seen from two corners, as two cameras. ``still``: nobody, steady daylight, no swaying
clutter or drifting shadows (the scene motion gating should skip). ``person``: the same room with
someone walking about and standing in it from the first frame to the last. ``visit``: someone walks
in a few seconds after the start, stands, and leaves, over and over (``loop=1``): each visit is one
arrival to time to the MQTT person sensor, a few captions, and an event with its clip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.inference.imaging import Image
from appliance.sim.render import Renderer
from appliance.sim.scenario import Scenario, parse_scenario

FPS = 10
ROOM = {"room": {"kind": "room", "x": [0, 7], "z": [0, 7]}}
STILL_CAMERAS = [
    {"place": "room", "at": [0.3, 0.3], "height": 2.5, "yaw": 45, "pitch": 24, "fov": 80, "clutter": False},
    {"place": "room", "at": [6.7, 0.3], "height": 2.5, "yaw": -45, "pitch": 24, "fov": 80, "clutter": False},
]
PERSON_SCRIPT = [
    {"enter": [3.5, 4.0]},
    {"walk": [[2.0, 5.0], [4.5, 5.5], [3.0, 3.5]], "speed": 0.8},
    {"stand": 10},
    {"walk": [[4.5, 4.5], [2.5, 4.0]], "speed": 0.8},
    {"stand": 30},
]
VISIT_SCRIPT = [{"enter": [6.5, 6.5]}, {"walk": [[3.5, 4.0]]}, {"stand": 5}, {"walk": [[6.8, 3.5]]}, {"leave": True}]
VISIT_START = 2.0  # seconds: the visitor's first step into the room
VISIT_SECONDS = 24.0  # one visit and the empty room after it, long enough for the event to end


def _scenario(description: str, duration: float, people: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "description": description,
        "fps": FPS,
        "duration": duration,
        "resolution": [640, 480],
        "caption_every": 2.0,
        "places": ROOM,
        "cameras": STILL_CAMERAS,
        "people": people,
    }


SCENES: dict[str, dict[str, Any]] = {
    "still": _scenario("Nobody in a still room, steady daylight.", 60.0, []),
    "person": _scenario(
        "Someone walks about and stands in the room the whole time.",
        60.0,
        [{"id": "occupant", "shirt": "blue", "start": 0, "script": PERSON_SCRIPT}],
    ),
    "visit": _scenario(
        "Someone walks in, stands at the window and leaves; then the room is empty.",
        VISIT_SECONDS,
        [{"id": "visitor", "shirt": "red", "start": VISIT_START, "script": VISIT_SCRIPT}],
    ),
}


def write_scene(name: str, folder: Path) -> Path:
    """The scene as a scenario file in ``folder``, for ``sim:PATH`` camera URIs."""
    path = folder / f"bench-{name}.json"
    path.write_text(json.dumps(SCENES[name]))
    return path


def scene(name: str) -> Scenario:
    return parse_scenario(f"bench-{name}", SCENES[name])


def camera_uris(path: Path) -> tuple[str, str]:
    """Both views of a scene file, at the scene's own frame rate (as cameras deliver), looping."""
    return f"sim:{path}?view=0&loop=1", f"sim:{path}?view=1&loop=1"


def first_person_frame(scenario: Scenario, view: int) -> int | None:
    """Index of the first frame of ``view`` showing a person who must be found (the ground truth)."""
    renderer = Renderer(scenario, view)
    for index in range(scenario.frames):
        if renderer.frame(index).truth.counted:
            return index
    return None


@dataclass(frozen=True)
class RecordedFrame:
    image: Image
    people: int  # people the truth says must be found


def recorded_frames(count: int) -> list[RecordedFrame]:
    """``count`` frames of the ``person`` scene, both views alternately, spread over its length."""
    scenario = scene("person")
    renderers = [Renderer(scenario, view) for view in range(len(scenario.cameras))]
    step = max(1, scenario.frames // max(1, count))
    frames = []
    for i in range(count):
        drawn = renderers[i % len(renderers)].frame((i * step) % scenario.frames)
        frames.append(RecordedFrame(drawn.image, len(drawn.truth.counted)))
    return frames
