"""The synthetic world written out as ordinary data sets, so that training on it is training on files.

Random snapshots become JPEG frames, a COCO detection file (persons, and the knife, bag or phone a
person holds, where the world drew it; what the world marks ignored is an ``iscrowd`` region),
person crops in one folder per behaviour label and a COCO captions file, plus ``truth.json`` with
everything known about each frame, for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from appliance.sim.figure import OBJECTS
from appliance.sim.render import PersonTruth
from appliance.sim.snapshots import Snapshot, snapshots
from tools.convert.datasets import DataSets, Example, write_datasets

# The classifier's labels: what a person is doing, as an alert cares about it.
BEHAVIOURS = ("fall", "normal", "violence")
# The detector's classes: people, and what they may hold (the appliance's held objects).
DETECTOR_CLASSES = ("person", *OBJECTS)


def behaviour(person: PersonTruth) -> str:
    if person.action == "fighting" or person.held == "knife":
        return "violence"
    if person.action in ("falling", "lying"):
        return "fall"
    return "normal"


class SyntheticSet(DataSets):
    @property
    def truth(self) -> Path:
        """Everything true about every image (as ``appliance sim render`` writes it), for evaluation."""
        return self.folder / "truth.json"


def _examples(shots: Iterator[Snapshot], truths: list[dict[str, object]]) -> Iterator[Example]:
    for shot in shots:
        people = shot.truth.people
        truths.append({"file": f"{shot.truth.index:06d}.jpg", "place": shot.truth.place, **shot.truth.to_json()})
        held = [(p.held_box, p.held, p.ignore) for p in people if p.held is not None and p.held_box is not None]
        yield Example(
            shot.image,
            [(p.box, "person", p.ignore) for p in people] + held,
            [(p.box, behaviour(p)) for p in people if not p.ignore],
            shot.truth.caption or "",
        )


def write_synthetic(
    folder: Path, seed: int, count: int, width: int = 640, height: int = 480, nobody: bool = False
) -> SyntheticSet:
    truths: list[dict[str, object]] = []
    shots = snapshots(seed, count, width, height, nobody=nobody)
    write_datasets(_examples(shots, truths), folder, DETECTOR_CLASSES, BEHAVIOURS, total=count)
    out = SyntheticSet(folder)
    out.truth.write_text(json.dumps({"width": width, "height": height, "frames": truths}))
    return out
