"""``appliance sim render``: a scenario to one MP4 per camera and its ground truth as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from appliance.sim.render import Renderer
from appliance.sim.scenario import Scenario
from appliance.video import Mp4Writer

TRUTH_NAME = "truth.json"


def render_scenario(scenario: Scenario, out: Path, seed: int = 0, seconds: float | None = None) -> Path:
    """Write ``camK.mp4`` for every camera and ``truth.json``; returns the truth file's path."""
    out.mkdir(parents=True, exist_ok=True)
    frames = scenario.frames if seconds is None else min(scenario.frames, round(seconds * scenario.fps))
    cameras = []
    for view, spec in enumerate(scenario.cameras):
        renderer = Renderer(scenario, view, seed)
        name = f"cam{view}"
        truths = []
        with Mp4Writer(out / f"{name}.mp4", scenario.fps, scenario.width, scenario.height) as writer:
            for index in range(frames):
                frame = renderer.frame(index)
                writer.write(frame.image)
                truths.append(frame.truth.to_json())
                if index % 50 == 0:
                    print(f"\r{name}: frame {index + 1} of {frames}", end="", file=sys.stderr, flush=True)
        print(f"\r{name}: {frames} frames written to {out / (name + '.mp4')}", file=sys.stderr)
        cameras.append({"name": name, "file": f"{name}.mp4", "place": spec.place.kind, "frames": truths})
    truth = {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": seed,
        "fps": scenario.fps,
        "resolution": [scenario.width, scenario.height],
        "cameras": cameras,
    }
    path = out / TRUTH_NAME
    path.write_text(json.dumps(truth, separators=(",", ":")) + "\n", encoding="utf-8")
    return path
