"""Runs inside the onnx2tf environment (Python >= 3.12; see onnx2tf_env.py): an Ultralytics detector's
ONNX export to a TensorFlow SavedModel that the toolchain then quantizes like any other.

    python onnx2tf_worker.py MODEL.onnx WORKDIR SIZE

It checks the graph is a yolov8-contract detector (one input [1, 3, H, W], one output
[1, 4 + classes, anchors]), divides the boxes by the input size inside the graph (the export's
boxes are in input pixels; in one int8 tensor with the scores they would leave the scores
steps of about 1.25 at 320; Ultralytics' own TFLite export normalises the same way), and runs
onnx2tf with its tf_converter backend. It writes WORKDIR/savedmodel and
WORKDIR/summary.json (input name, classes, anchors, class names from the export's metadata,
onnx2tf version). Only onnx, numpy and onnx2tf are imported here: the toolchain's own packages
live in the other environment.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# onnx2tf loads this calibration sample from the internet unless a file of that name is in the
# working directory, even when it is not quantizing; the toolchain calibrates on its own frames.
PLACEHOLDER_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class WorkerError(Exception):
    pass


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _class_names(model: onnx.ModelProto) -> list[str] | None:
    """Ultralytics writes ``names`` as a Python dict literal ({0: 'person', ...}) in the metadata."""
    for prop in model.metadata_props:
        if prop.key == "names":
            names = ast.literal_eval(prop.value)
            return [str(names[i]) for i in sorted(names)]
    return None


def inspect(model: onnx.ModelProto, source: Path, size: int) -> dict[str, object]:
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise WorkerError(f"{source}: expected one input and one output, found {len(inputs)} and {len(graph.output)}")
    shape_in, shape_out = _dims(inputs[0]), _dims(graph.output[0])
    if len(shape_in) != 4 or shape_in[1] != 3:
        raise WorkerError(f"{source}: input {inputs[0].name!r} is {shape_in}; expected [1, 3, height, width]")
    static = [n for n in shape_in[2:] if isinstance(n, int)]
    if static and static != [size, size]:
        raise WorkerError(
            f"{source}: the input is {shape_in[2]}x{shape_in[3]}, not {size}x{size}: export it at imgsz={size} "
            f"(yolo export format=onnx imgsz={size}) or pass --size {shape_in[2]}"
        )
    if len(shape_out) != 3 or (isinstance(shape_out[1], int) and shape_out[1] < 5):
        raise WorkerError(
            f"{source}: output {graph.output[0].name!r} is {shape_out}; expected [1, 4 + classes, anchors] "
            "(an Ultralytics v8/11 detection export, without NMS)"
        )
    return {
        "input": inputs[0].name,
        "dynamic": not static,
        "classes": shape_out[1] - 4 if isinstance(shape_out[1], int) else None,
        "anchors": shape_out[2] if isinstance(shape_out[2], int) else None,
        "names": _class_names(model),
    }


LINEAR = {"Add", "Sub", "Concat", "Slice", "Split", "Mul", "Div"}  # ops the box decoding is made of


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    found = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _set_constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    for initialiser in graph.initializer:
        if initialiser.name == name:
            initialiser.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return


def _fail(source: Path, what: str) -> WorkerError:
    return WorkerError(
        f"{source}: {what}, unlike an Ultralytics v8/11 detection export (Concat of boxes times strides and "
        "sigmoid scores); export the detector with Ultralytics: format=onnx, nms=False"
    )


def _decoding(
    grid: str, producers: dict[str, onnx.NodeProto], constants: dict[str, np.ndarray]
) -> tuple[set[str], list[str], list[str]]:
    """Walk the box decoding back from ``grid``: its tensors, its additive constants (the anchor points)
    and the tensors it starts from (the DFL distances; anchors too, where an unsimplified export
    computes them). Scaling all of those by the same factor scales the decoded boxes by it."""
    pending, seen, anchors, distances = [grid], set(), [], []
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if name in constants:
            anchors.append(name)
        elif node is None or node.op_type not in LINEAR:
            distances.append(name)
        elif node.op_type in ("Mul", "Div"):  # only the variable operand carries the units
            pending += [i for i in node.input if i not in constants]
        else:  # through a slice or split only the data
            pending += [i for i in (node.input[:1] if node.op_type in ("Slice", "Split") else node.input) if i]
    return seen, anchors, distances


def normalise_boxes(model: onnx.ModelProto, size: int, source: Path) -> None:
    """Box decoding in units of the input size instead of pixels, as Ultralytics' TFLite export does it.

    An export ends in Concat(xywh * strides, sigmoid(scores)), xywh decoded in grid cells from the
    anchor points and the DFL distances. In int8, the multiply by the strides shares its scale
    (pixels, up to about a thousand) back with the grid-cell tensors before it, which then move in
    steps of a few cells; dividing after it saturates the pixel boxes instead. So the per-anchor
    factor strides / size goes to where the decoding starts: into the anchor constants and onto
    the DFL distances. The decoding is linear in both, every tensor of it stays within about 0..2,
    and the multiply by the strides is dropped.
    """
    graph = model.graph
    output = graph.output[0].name
    producers = {name: node for node in graph.node for name in node.output}
    constants = _constants(graph)
    head = producers.get(output)
    if head is None or head.op_type != "Concat" or len(head.input) != 2:
        raise _fail(source, "the output is not made by a Concat of two tensors")
    scaling = producers.get(head.input[0])
    operands = [n for n in scaling.input if n in constants] if scaling is not None else []
    if scaling is None or scaling.op_type != "Mul" or len(operands) != 1:
        raise _fail(source, "the boxes are not a product with a constant (the strides)")
    strides = constants[operands[0]].astype(np.float32)
    factor = (strides / size).reshape(1, 1, -1)  # per anchor
    grid = next(n for n in scaling.input if n not in constants)
    head.input[0] = grid
    graph.node.remove(scaling)
    seen, anchors, distances = _decoding(grid, producers, constants)
    for name in anchors:
        _set_constant(graph, name, constants[name] * factor.reshape((1,) * (constants[name].ndim - 1) + (-1,)))
    for name in distances:
        unit = name + "_unit"
        graph.initializer.append(numpy_helper.from_array(factor, name + "_factor"))
        for consumer in graph.node:  # only the decoding's own nodes read the scaled distances
            if any(o in seen for o in consumer.output):
                consumer.input[:] = [unit if i == name else i for i in consumer.input]
        at = next((i + 1 for i, n in enumerate(graph.node) if name in n.output), 0)
        graph.node.insert(at, helper.make_node("Mul", [name, name + "_factor"], [unit]))
    if not distances:
        raise _fail(source, "the boxes are not decoded from the network's outputs")
    onnx.checker.check_model(model)


def main(source: Path, work: Path, size: int) -> None:
    try:
        model = onnx.load(str(source))
    except Exception as error:
        raise WorkerError(f"{source}: not an ONNX model onnx can read: {error}") from None
    summary = inspect(model, source, size)
    normalise_boxes(model, size, source)
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / "normalised.onnx"
    onnx.save(model, str(prepared))
    np.save(work / PLACEHOLDER_SAMPLE, np.zeros((20, 128, 128, 3), np.float32))
    command = [str(Path(sys.executable).parent / "onnx2tf"), "-i", str(prepared), "-o", str(work / "savedmodel")]
    command += ["-tb", "tf_converter", "-osd"]
    if summary["dynamic"]:
        command += ["-ois", f"{summary['input']}:1,3,{size},{size}"]
    # onnx2tf runs onnxsim from PATH: this environment's bin first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(work / "onnx2tf.log", "w") as log:
        status = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if status.returncode != 0 or not (work / "savedmodel" / "saved_model.pb").is_file():
        lines = (work / "onnx2tf.log").read_text(errors="replace").strip().splitlines()
        errors = [line for line in lines if "Error" in line or "ERROR" in line] or lines
        raise WorkerError(f"onnx2tf failed on {source} (see {work / 'onnx2tf.log'}): {errors[-1][:400]}")
    summary["onnx2tf"] = version("onnx2tf")
    (work / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
    except WorkerError as failure:
        print(failure, file=sys.stderr)
        sys.exit(2)
