"""``models/README.md``, the model card, written from ``metrics.json`` and the conversion records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.runtime import make_interpreter


@dataclass(frozen=True)
class Target:
    """One bar the reference models are held to on the held-out synthetic world."""

    name: str
    wanted: str
    measured: float
    met: bool


def targets(metrics: dict[str, Any], detector: bool = True) -> list[Target]:
    """The card's targets; without the detector's when the folder's detector is not the reference run's."""
    f, q = metrics["float"], metrics["int8"]
    qd, qk = q["detector"], q["captioner"]
    bars = [
        *(
            [
                ("Detector AP50, held-out images", qd["held_out"]["ap50"], 0.95),
                ("Detector AP50, shipped scenarios", qd["scenarios"]["ap50"], 0.95),
            ]
            if detector
            else []
        ),
        ("Caption BLEU-4", qk["bleu"]["4"], 0.7),
        ("Caption exact match", qk["exact"], 0.7),
        ("Knife captions said on frames with a knife", qk["held_objects"]["knife"]["recall"], 0.8),
    ]
    found = [Target(name, f">= {bound}", value, value >= bound) for name, value, bound in bars]
    fp = qd["empty"]["false_positives"]
    if detector:
        found.append(Target("False-positive boxes, empty scenes", "0", fp, fp == 0))
    # "Within a point": int8 may lose at most 0.01 against float; gaining is no fault.
    pairs = [
        *(
            [
                ("detector AP50, held-out", ("detector", "held_out", "ap50")),
                ("detector AP50, scenarios", ("detector", "scenarios", "ap50")),
            ]
            if detector
            else []
        ),
        ("classifier accuracy", ("classifier", "accuracy")),
        *[(f"caption BLEU-{n}", ("captioner", "bleu", str(n))) for n in "1234"],
    ]
    for name, path in pairs:
        a, b = f, q
        for key in path:
            a, b = a[key], b[key]
        found.append(Target(f"Int8 minus float, {name}", ">= -0.01", b - a, b - a >= -0.01))
    return found


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


def _num(value: float) -> str:
    return f"{value:.3f}"


def _every(n: int) -> str:
    return "every frame" if n == 1 else f"one frame in {n}"


def _size(out: Path, slot: str) -> str:
    record = json.loads((out / f"{slot}.json").read_text())
    return ", ".join(f"{role} {sizes['int8'] / 1024:.0f} KiB" for role, sizes in record["bytes"].items())


def stored_weights(path: Path) -> int:
    """How many numbers the TFLite file stores as constants: the weights, biases folded in (and
    any constant tables such as a detector head's anchor grid)."""
    interpreter = make_interpreter(str(path), 1)
    ops = interpreter._get_ops_details()
    made = {tensor for op in ops for tensor in op["outputs"]}
    fed = {detail["index"] for detail in interpreter.get_input_details()}
    constants = {t for op in ops for t in op["inputs"] if t >= 0 and t not in made and t not in fed}
    shapes = {detail["index"]: detail["shape"] for detail in interpreter.get_tensor_details()}
    return sum(int(np.prod(shapes[t])) for t in constants)


def _weights(out: Path, entry: dict[str, Any]) -> str:
    counts = [(role, stored_weights(out / model["file"])) for role, model in entry["models"].items()]
    if len(counts) == 1:
        return f"{counts[0][1] / 1000:.0f} k weights"
    return " and ".join(f"{count / 1000:.0f} k ({role})" for role, count in counts) + " weights"


REFERENCE_COMMAND = "python -m tools.convert reference"


def converted_detector(out: Path) -> dict[str, Any] | None:
    """The conversion record of the folder's detector when it is not the reference run's (a converted
    YOLO, say), else None: the card then describes it from that record, not from metrics.json."""
    record: dict[str, Any] = json.loads((out / "detector.json").read_text())
    return None if record["command"] == REFERENCE_COMMAND else record


def _describe(out: Path, recipes: dict[str, Any], slot: str, entry: dict[str, Any]) -> str:
    """The model of a slot (``entry``: its manifest entry), in the words of its recipe and its files."""
    converted = converted_detector(out) if slot == "detector" else None
    if converted is not None:
        labels = ", ".join((out / entry["files"]["labels"]["file"]).read_text().split())
        source = Path(converted["toolchain"].get("export", converted["sources"]["model"]["path"]))
        exported = converted["toolchain"].get("exported_size")
        origin = f"converted from {source.name}" + (f" (exported at {exported})" if exported else "")
        return f"yolov8 detector {origin}; classes {labels}; {_weights(out, entry)}"
    if slot == "detector":
        depth = recipes["detector"]["depth"]
        blocks = "one residual block" if depth == 1 else f"{depth} residual blocks"
        return f"yolov8-contract detector, anchor-free, strides 8/16/32, {blocks} a stride, {_weights(out, entry)}"
    if slot == "classifier":
        labels = ", ".join(sorted((out / entry["files"]["labels"]["file"]).read_text().split()))
        return (
            f"MobileNetV2 (alpha {recipes['classifier']['alpha']}) on square person crops; labels {labels}; "
            f"{_weights(out, entry)}"
        )
    encoder = entry["models"]["encoder"]
    _, height, width, _ = next(iter(encoder["inputs"].values()))["shape"]
    cells = next(iter(encoder["outputs"].values()))["shape"][1] - 1  # the grid, then the summary cell
    across = round((cells * width / height) ** 0.5)  # the grid has the input's aspect
    grid = f"{across} x {cells // across}"
    return f"CNN encoder ({grid} grid and a summary cell) + Bahdanau-attention GRU step decoder; {_weights(out, entry)}"


def _inputs(entry: dict[str, Any]) -> str:
    shapes = []
    for role, model in entry["models"].items():
        inputs = ", ".join("x".join(map(str, spec["shape"])) + " " + spec["dtype"] for spec in model["inputs"].values())
        shapes.append(f"{role}: {inputs}" if len(entry["models"]) > 1 else inputs)
    return "; ".join(shapes)


def _model_rows(out: Path, recipes: dict[str, Any]) -> str:
    """The table of the three models, one row each, from the manifest (read once) and the recipes."""
    slots = json.loads((out / "manifest.json").read_text())["slots"]
    return "\n".join(
        f"| {slot} | {_describe(out, recipes, slot, slots[slot])} | {_inputs(slots[slot])} | {_size(out, slot)} |"
        for slot in ("detector", "classifier", "captioner")
    )


def _caption_search(measured: dict[str, Any]) -> str:
    search = f"beam width {measured['beam_width']}"
    return search + (
        ", each keyframe also read mirrored and the two readings' word probabilities averaged"
        if measured["mirror"]
        else ""
    )


def _converted_section(record: dict[str, Any], entry: dict[str, Any]) -> str:
    """What the card says of a detector converted into the folder after the reference run."""
    validation = record["validation"]
    params = entry["params"]
    lines = [
        "## The detector",
        "",
        f"The detector is **not** the reference run's: `{record['command']}` replaced it. Its figures are the "
        "conversion's (`detector.json`, `detector-report.md`); the synthetic world's detector figures below are "
        "left out, as they describe a model no longer here.",
        "",
        f"- Person classes: {', '.join(params['person_classes'])}; fallen-person classes: "
        f"{', '.join(params.get('fall_classes', [])) or 'none'}.",
        f"- Presence scores: {params['presence_score']} counts a person, {params['confirm_score']} makes one present "
        f"({params['presence_source']}).",
        f"- Int8 against float on {validation['frames']} held-out calibration frames: {validation['matched_boxes']} of "
        f"{validation['float_boxes']} float boxes matched ({_pct(validation['matched_rate'])}), mean IoU "
        f"{_num(validation['mean_iou'])}, mean score difference {validation['mean_score_difference']:.4f}.",
    ]
    source = validation.get("source")
    if source is not None:
        lines.append(
            f"- Against the export at its own size ({source['size']}): it finds {_pct(source['int8_found'])} of the "
            f"export's {source['people']} people; {source['int8_per_frame']:.2f} people a frame against "
            f"{source['people_per_frame']:.2f}."
        )
    return "\n".join(lines) + "\n"


def card(out: Path, metrics: dict[str, Any]) -> str:
    f, q = metrics["float"], metrics["int8"]
    plan = metrics["plan"]
    fd, qd = f["detector"], q["detector"]
    fc, qc = f["classifier"], q["classifier"]
    fk, qk = f["captioner"], q["captioner"]
    converted = converted_detector(out)
    detector_rows = [
        ("Detector AP50, persons, held-out images", _num(fd["held_out"]["ap50"]), _num(qd["held_out"]["ap50"])),
        (
            f"Detector recall / precision at score {qd['operating_score']}",
            f"{_pct(fd['held_out']['recall'])} / {_pct(fd['held_out']['precision'])}",
            f"{_pct(qd['held_out']['recall'])} / {_pct(qd['held_out']['precision'])}",
        ),
        (
            f"Recall of small people (under 50 px tall; {qd['held_out']['small_people']} of them)",
            _pct(fd["held_out"]["small_recall"]),
            _pct(qd["held_out"]["small_recall"]),
        ),
        ("Detector AP50, shipped scenarios", _num(fd["scenarios"]["ap50"]), _num(qd["scenarios"]["ap50"])),
        *[
            (
                f"Frames whose boxes at score {qd['count_score']} (the presence score) number the people, {name}",
                _pct(fd[part]["counted_right"]),
                _pct(qd[part]["counted_right"]),
            )
            for part, name in (("held_out", "held-out"), ("scenarios", "scenarios"))
        ],
        (
            f"False-positive boxes per hour, empty scenes ({qd['empty']['seconds']:.0f} s scored)",
            f"{fd['empty']['false_positives_per_hour']:.0f}",
            f"{qd['empty']['false_positives_per_hour']:.0f}",
        ),
        *[
            (
                f"Detector AP50 / recall at score {qd['operating_score']}, {thing} in a hand "
                f"({found['people']} held-out)",
                f"{_num(fd['objects'][thing]['ap50'])} / {_pct(fd['objects'][thing]['recall'])}",
                f"{_num(found['ap50'])} / {_pct(found['recall'])}",
            )
            for thing, found in qd.get("objects", {}).items()  # runs from before objects had boxes have none
        ],
    ]
    rows = [
        *(detector_rows if converted is None else []),
        (f"Classifier accuracy ({qc['crops']} person crops)", _pct(fc["accuracy"]), _pct(qc["accuracy"])),
        *[
            (f"Classifier accuracy, {label}", _pct(fc["per_label"][label]), _pct(qc["per_label"][label]))
            for label in sorted(qc["per_label"])
        ],
        *[(f"Caption BLEU-{n}", _num(fk["bleu"][str(n)]), _num(qk["bleu"][str(n)])) for n in range(1, 5)],
        ("Caption exact match", _pct(fk["exact"]), _pct(qk["exact"])),
        *[
            (f"Caption accuracy: {category}", _pct(fk["categories"][category]), _pct(qk["categories"][category]))
            for category in ("count", "action", "held", "colour")
        ],
        *[
            row
            for thing, q_held in qk["held_objects"].items()
            for row in (
                (
                    f"{thing.capitalize()} said on frames with one ({q_held['frames']} frames)",
                    _pct(fk["held_objects"][thing]["recall"]),
                    _pct(q_held["recall"]),
                ),
                (
                    f"{thing.capitalize()} said on frames without one ({qk['frames'] - q_held['frames']} frames)",
                    _pct(fk["held_objects"][thing]["false_alarms"]),
                    _pct(q_held["false_alarms"]),
                ),
            )
        ],
    ]
    table = "\n".join(f"| {name} | {a} | {b} |" for name, a, b in rows)
    found = targets(metrics, detector=converted is None)
    manifest = json.loads((out / "manifest.json").read_text())
    detector_section = "" if converted is None else _converted_section(converted, manifest["slots"]["detector"]) + "\n"
    trained = (
        "They are trained on synthetic scenes only"
        if converted is None
        else "The classifier and the captioner are trained on synthetic scenes only; the detector is not (below)"
    )
    bars = "\n".join(
        f"| {t.name} | {t.wanted} | {t.measured:.4g} | {'met' if t.met else '**not met**'} |" for t in found
    )
    met = sum(t.met for t in found)
    examples = "\n".join(f"| {e['truth']} | {e['said']} |" for e in qk["examples"][:8]) or "| (none) | |"
    return f"""# Model card: the reference models

These are the three models in this folder, made by one command from nothing:

```sh
python -m tools.convert reference
```

**{trained}** (the appliance's own simulated world: drawn people
in drawn corridors, shops, rooms and entrances) and are **not for real cameras**. They exist so
that the appliance runs end to end, offline, with measured behaviour, and to show the toolchain
at work. Make real ones from real data with the same toolchain (see "Making real models" below).

| Slot | Model | Input | File |
| --- | --- | --- | --- |
{_model_rows(out, plan["recipes"])}

All are full-integer int8 TFLite, converted with `tools.convert` (calibrated on training frames,
checked against the float model on held-out ones).

{detector_section}## Training data

{plan["train_images"]} random snapshots of the synthetic world (640 x 480; seed {plan["seeds"]["train"]}): places, camera
poses, day, dusk and infrared night, flicker, drifting shadows and swaying clutter; 0 to 5 people
walking, standing, fighting, falling, lying, holding a knife, a bag or a phone. Written to disk
as a COCO detection file, person crops in one folder per label (violence: fighting or holding a
knife; fall: falling or lying; normal: the rest) and a COCO captions file, then trained on like
any data set. The detector trains on these, and on {plan["empty_images"]} snapshots with nobody in them as background
(seed {plan["seeds"]["empty"]}: shadows, clutter, furniture at night); the classifier on the first {plan["crop_images"]} snapshots of the same
stream (seed {plan["seeds"]["crops"]}: these and more); the captioner on {plan["caption_images"]} snapshots of its own
(seed {plan["seeds"]["captions"]}), since it learns counts, actions and knives from whole frames.

## Measured

Held-out set: {plan["held_out_images"]} snapshots (seed {plan["seeds"]["held_out"]}). Scenarios: {_every(plan["scenario_every"])} of both
cameras of each shipped scenario with people (`appliance sim list`); empty scenes: the
`empty-lighting` scenario (lights flicker, dusk, the infrared switch, shadows, plants, a sign, a
curtain and branches swaying, and nobody). Everything is measured through the appliance's own
inference code, float and int8 models alike, with the appliance's default settings (detector: soft
non-maximum suppression from IoU {qd["suppression_iou"]}, nested boxes over {qd["suppression_nested"]}; captions: {_caption_search(qk)}).

| Metric | Float | Int8 |
| --- | --- | --- |
{table}

Targets, int8 models ({met} of {len(found)} met):

| Target | Wanted | Measured | |
| --- | --- | --- | --- |
{bars}

Captions are scored by BLEU and, since BLEU is lenient on a small grammar, by exact match and by
the facts they state, parsed back with the grammar: how many people, what they do, what they
hold, the shirt colour of a lone person in colour light. Each object a caption may name (knife,
bag, phone) is counted both ways: said where the true caption names it, and said where it does not.
In the appliance a knife in a caption alone raises a warning; an alarm takes the classifier's
violence label too.

Some int8 captions that differ from the truth:

| Truth | Said |
| --- | --- |
{examples}

`metrics.json` holds every figure; a test renders the held-out set again, re-measures the
committed models on it and on the scenarios, and holds them to this card.

## Making real models

- Detector: convert an Ultralytics YOLOv8n/YOLO11n export, or train this small detector on a COCO
  detection file: `python -m tools.convert detector --coco instances.json --images DIR`.
- Classifier: `python -m tools.convert classifier DATASET` on a folder with one subfolder per
  label (person crops).
- Captioner: `python -m tools.convert captioner --captions captions.json --images DIR`.
- Any trained Keras model or SavedModel: `python -m tools.convert keras SLOT ...`.

Calibrate on frames of the scene the cameras will watch (`--calib DIR`).
"""


def refresh_card(out: Path) -> bool:
    """After a conversion into ``out``: a folder with a model card (and its metrics.json) gets its card
    written again, so that it describes the models now there. False when the folder has none."""
    path = out / "metrics.json"
    if not path.is_file() or not (out / "README.md").is_file():
        return False
    metrics = json.loads(path.read_text())
    converted = converted_detector(out)
    if converted is not None:  # its detector figures are of a model no longer here: say so where they are
        metrics["detector_replaced"] = {"command": converted["command"], "record": "detector.json"}
    else:
        metrics.pop("detector_replaced", None)
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_card(out, metrics)
    return True


def write_card(out: Path, metrics: dict[str, Any]) -> None:
    (out / "README.md").write_text(card(out, metrics), encoding="utf-8")
