"""An Ultralytics v8/11 detection export: read in a second, and its head rewritten for int8 at any size.

``read_export`` checks the export's contract and reads its metadata (class names, image size,
task) before any long step, so a wrong request is refused at once. ``prepare`` rewrites the
head of the graph, in plain ONNX, before onnx2tf sees it:

- **Scores keep their own scale.** The export concatenates each level's 64 box-distribution
  logits with its class logits, then the three levels, and splits them again before the sigmoid.
  In int8 a concatenation shares one scale among its inputs, so the class logits took the box
  logits' (about 0.2 on the Normal/Fall YOLOv8s): near 0.5 a score moved in steps of 0.05. The
  rewrite reshapes and joins the two branches separately and clips the class logits to
  +-``LOGIT_BOUND`` right after their convolution; the converter gives a clip's input the clip's
  scale, so the convolution's int8 output is the bounded logit in steps of 2 * bound / 255 and a
  score near 0.5 moves by 2/255. Scores are capped to 0.018 .. 0.982 (sigmoid of -+4).
- **Any input size.** The head is convolutional: for another ``WxH`` (multiples of the largest
  stride) the anchor points, strides and the reshapes that name the anchor count are made anew.
- **Boxes as fractions of the input**, as Ultralytics' own TFLite export writes them: the
  per-anchor factors stride / W and stride / H go into the anchor points and onto the DFL
  distances, and the multiply by the strides is dropped. In int8 the pixel-sized tensors of the
  decoding would otherwise move in steps of whole grid cells (0 of 881 boxes matched). The boxes
  are clipped to 0..1 (a centre or a size outside the input is no box the appliance can use), so
  that the output tensor, shared with the scores, keeps a step of 1/255 (unclipped, a few stray
  anchors' boxes reached 2.0 on vtest.avi and doubled it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tools.convert import ConvertError

LOGIT_BOUND = 4.0  # class logits are clipped to +-this: int8 step 8/255, a score step of 2/255 near 0.5
LINEAR = {"Add", "Sub", "Concat", "Slice", "Split", "Mul", "Div"}  # ops the box decoding is made of
HOW_TO_EXPORT = "export the detector with Ultralytics: yolo export model=MODEL.pt format=onnx nms=False dynamic=False"


@dataclass(frozen=True)
class Export:
    """What an export says of itself, read before any conversion."""

    path: Path
    input: str
    size: tuple[int, int]  # (width, height) the export reads
    classes: int
    anchors: int
    names: tuple[str, ...] | None  # from Ultralytics' metadata
    task: str | None
    description: str | None = None  # Ultralytics' metadata: what it was trained on, in its words


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _class_names(source: Path, text: str) -> tuple[str, ...]:
    """Ultralytics writes ``names`` as a Python dict literal: ``{0: 'person', 1: 'bicycle', ...}``."""
    try:
        names = ast.literal_eval(text)
        return tuple(str(names[i]) for i in sorted(names))
    except (ValueError, SyntaxError, TypeError, KeyError):
        raise ConvertError(
            f"{source}: the metadata's class names are not {{index: 'name', ...}}: {text[:80]}"
        ) from None


def read_export(path: Path) -> tuple[onnx.ModelProto, Export]:
    """The export and its contract: one input [1, 3, H, W], one output [1, 4 + classes, anchors]."""
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as error:
        raise ConvertError(f"{path}: not an ONNX model onnx can read ({type(error).__name__})") from None
    metadata = _metadata(model)
    task = metadata.get("task")
    if task is not None and task != "detect":
        raise ConvertError(f"{path}: a {task!r} export; the detector slot takes a 'detect' one ({HOW_TO_EXPORT})")
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ConvertError(
            f"{path}: {len(inputs)} inputs and {len(graph.output)} outputs; a YOLO detection export has one of each "
            f"({HOW_TO_EXPORT})"
        )
    shape_in, shape_out = _dims(inputs[0]), _dims(graph.output[0])
    if len(shape_in) != 4 or shape_in[1] != 3:
        raise ConvertError(f"{path}: input {inputs[0].name!r} is {shape_in}; expected [1, 3, height, width]")
    height, width = shape_in[2], shape_in[3]
    if not isinstance(height, int) or not isinstance(width, int):
        raise ConvertError(f"{path}: the input size is not fixed ({shape_in}); {HOW_TO_EXPORT}")
    if len(shape_out) != 3 or not all(isinstance(n, int) for n in shape_out) or int(shape_out[1]) < 5:
        raise ConvertError(
            f"{path}: output {graph.output[0].name!r} is {shape_out}; expected [1, 4 + classes, anchors], "
            f"an Ultralytics v8/11 detection head ({HOW_TO_EXPORT})"
        )
    classes, anchors = int(shape_out[1]) - 4, int(shape_out[2])
    names = _class_names(path, metadata["names"]) if "names" in metadata else None
    if names is not None and len(names) != classes:
        raise ConvertError(f"{path}: the metadata names {len(names)} classes, the output has {classes}")
    description = metadata.get("description")
    return model, Export(path, inputs[0].name, (width, height), classes, anchors, names, task, description)


def anchor_grid(size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' anchor points [2, N] (x, y in grid cells, at cell centres, row by row, level by
    level) and strides [N] for an input of ``size`` (width, height)."""
    points, scales = [], []
    for stride in strides:
        columns, rows = size[0] // stride, size[1] // stride
        y, x = np.meshgrid(np.arange(rows) + 0.5, np.arange(columns) + 0.5, indexing="ij")
        points.append(np.stack([x.ravel(), y.ravel()]))
        scales.append(np.full(rows * columns, stride))
    return np.concatenate(points, 1).astype(np.float32), np.concatenate(scales).astype(np.float32)


class _Graph:
    """Lookups over a graph that the rewrites keep up to date."""

    def __init__(self, model: onnx.ModelProto, source: Path) -> None:
        self.model, self.graph, self.source = model, model.graph, source
        self.constants = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producers = {name: node for node in self.graph.node for name in node.output}

    def fail(self, what: str) -> ConvertError:
        return ConvertError(
            f"{self.source}: {what}, unlike an Ultralytics v8/11 detection head (per level Concat(boxes, classes), "
            f"Split, DFL, sigmoid scores); {HOW_TO_EXPORT}"
        )

    def producer(self, name: str, op: str, what: str) -> onnx.NodeProto:
        node: onnx.NodeProto | None = self.producers.get(name)
        if node is None or node.op_type != op:
            raise self.fail(f"{what} is not made by a {op}")
        return node

    def constant(self, name: str, value: np.ndarray) -> str:
        """A new initialiser named after ``name`` (unique in the graph)."""
        unique, count = name, 0
        while unique in self.constants:
            count += 1
            unique = f"{name}_{count}"
        self.graph.initializer.append(numpy_helper.from_array(value, unique))
        self.constants[unique] = value
        return unique

    def set_constant(self, name: str, value: np.ndarray) -> None:
        for initialiser in self.graph.initializer:
            if initialiser.name == name:
                initialiser.CopyFrom(numpy_helper.from_array(value, name))
                break
        else:
            node = self.producers[name]
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(value, name))
        self.constants[name] = value

    def add(self, nodes: list[onnx.NodeProto]) -> None:
        """Append ``nodes``; ``sort`` puts them in order once the rewrites are done."""
        self.graph.node.extend(nodes)
        self.producers.update({name: node for node in nodes for name in node.output})

    def remove(self, nodes: list[onnx.NodeProto]) -> None:
        for node in nodes:
            self.graph.node.remove(node)
            for name in node.output:
                self.producers.pop(name, None)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return [node for node in self.graph.node if name in node.input]


def _split_class_branch(g: _Graph, export: Export) -> None:
    """Join each level's box and class branches separately instead of through one shared tensor,
    and clip the class logits right after their last convolution (see the module's docstring)."""
    output = g.graph.output[0].name
    head = g.producer(output, "Concat", "the output")
    if len(head.input) != 2:
        raise g.fail("the output is not a Concat of boxes and scores")
    sigmoid = g.producer(head.input[1], "Sigmoid", "the scores")
    split = g.producer(sigmoid.input[0], "Split", "the class logits")
    joined = g.producer(split.input[0], "Concat", "the logits of all levels")
    sizes = g.constants.get(split.input[1]) if len(split.input) > 1 else None
    if sizes is None or len(sizes) != 2 or int(sizes[1]) != export.classes:
        raise g.fail("the head's Split does not part box logits from the class logits")
    bins = int(sizes[0])
    low = g.constant("class_logits_low", np.array(-LOGIT_BOUND, np.float32))
    high = g.constant("class_logits_high", np.array(LOGIT_BOUND, np.float32))
    new, old = [], [split, joined]
    boxes: list[str] = []
    scores: list[str] = []
    for level, flat in enumerate(joined.input):
        reshape = g.producer(flat, "Reshape", f"level {level}'s logits")
        both = g.producer(reshape.input[0], "Concat", f"level {level}'s logits")
        if len(both.input) != 2:
            raise g.fail(f"level {level} does not join one box and one class tensor")
        old += [reshape, both]
        clipped = f"{both.input[1]}_clipped"
        new.append(helper.make_node("Clip", [both.input[1], low, high], [clipped]))
        for branch, tensor, channels in ((boxes, both.input[0], bins), (scores, clipped, export.classes)):
            shape = g.constant(f"{tensor}_flat_shape", np.array([1, channels, -1], np.int64))
            branch.append(f"{tensor}_flat")
            new.append(helper.make_node("Reshape", [tensor, shape], [branch[-1]]))
    g.remove(old)
    g.add(
        [
            *new,
            helper.make_node("Concat", boxes, [split.output[0]], axis=2),
            helper.make_node("Concat", scores, [split.output[1]], axis=2),
        ]
    )


def _sort(g: _Graph) -> None:
    """Order the nodes topologically again after insertions (ONNX requires it)."""
    available = {i.name for i in g.graph.input} | {i.name for i in g.graph.initializer} | {""}
    pending, ordered = list(g.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise g.fail("the rewritten head has a cycle or a missing input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del g.graph.node[:]
    g.graph.node.extend(ordered)


def _prune(g: _Graph) -> None:
    """Drop the constants the rewrites left unread (the old strides, split sizes and shapes)."""
    read = {name for node in g.graph.node for name in node.input}
    unread = [i for i in g.graph.initializer if i.name not in read]
    for initialiser in unread:
        g.graph.initializer.remove(initialiser)
    g.remove([n for n in g.graph.node if n.op_type == "Constant" and n.output[0] not in read])


def _decoding(g: _Graph, grid: str) -> tuple[set[str], list[str], list[str]]:
    """Walk the box decoding back from ``grid``: its tensors, its additive constants (the anchor
    points) and the tensors it starts from (the DFL distances). Scaling the latter two by the same
    factor scales the decoded boxes by it."""
    pending, seen, anchors, distances = [grid], set(), [], []
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        node = g.producers.get(name)
        if name in g.constants:
            anchors.append(name)
        elif node is None or node.op_type not in LINEAR:
            distances.append(name)
        elif node.op_type in ("Mul", "Div"):  # only the variable operand carries the units
            pending += [i for i in node.input if i not in g.constants]
        else:  # through a slice or split only the data
            pending += [i for i in (node.input[:1] if node.op_type in ("Slice", "Split") else node.input) if i]
    return seen, anchors, distances


def _rescale_head(g: _Graph, export: Export, size: tuple[int, int]) -> None:
    """Anchors and strides for ``size``, and boxes as fractions of it (see the module's docstring)."""
    head = g.producer(g.graph.output[0].name, "Concat", "the output")
    scaling = g.producer(head.input[0], "Mul", "the boxes (times the strides)")
    operands = [n for n in scaling.input if n in g.constants]
    if len(operands) != 1:
        raise g.fail("the boxes are not a product with a constant (the strides)")
    old_strides = g.constants[operands[0]].reshape(-1)
    strides = tuple(int(s) for s in dict.fromkeys(old_strides.tolist()))
    old_points, expected = anchor_grid(export.size, strides)
    if old_strides.size != export.anchors or not np.array_equal(old_strides, expected):
        raise g.fail(f"the strides constant is not {strides} per anchor for {export.size[0]}x{export.size[1]}")
    largest = max(strides)
    if size[0] % largest or size[1] % largest:
        raise ConvertError(
            f"--size {size[0]}x{size[1]}: width and height must be multiples of {largest}, the export's largest stride"
        )
    points, scale = anchor_grid(size, strides)
    per_axis = np.stack([scale / size[0], scale / size[1]])  # [2, N']: x rows and y rows
    grid = next(n for n in scaling.input if n not in g.constants)
    zero, one = g.constant("boxes_low", np.array(0.0, np.float32)), g.constant("boxes_high", np.array(1.0, np.float32))
    head.input[0] = f"{grid}_clipped"
    g.remove([scaling])
    g.add([helper.make_node("Clip", [grid, zero, one], [head.input[0]])])
    seen, anchors, distances = _decoding(g, grid)
    if not anchors or len(distances) != 1:
        raise g.fail("the boxes are not decoded from anchor points and one tensor of DFL distances")
    for name in anchors:
        value = g.constants[name]
        if value.shape[-2:] != (2, export.anchors) or not np.allclose(value.reshape(2, -1), old_points):
            raise g.fail(f"the decoding's constant {name} {value.shape} is not the anchor points")
        g.set_constant(name, (points * per_axis).reshape((1,) * (value.ndim - 2) + points.shape))
    (distance,) = distances
    factor = g.constant(f"{distance}_factor", per_axis[[0, 1, 0, 1]][None].astype(np.float32))  # l t r b
    unit = f"{distance}_unit"
    for consumer in g.graph.node:  # only the decoding's own nodes read the scaled distances
        if any(o in seen for o in consumer.output):
            consumer.input[:] = [unit if i == distance else i for i in consumer.input]
    g.add([helper.make_node("Mul", [distance, factor], [unit])])
    anchors_now = points.shape[1]
    for node in g.graph.node:  # reshapes that name the anchor count (the DFL's)
        if node.op_type == "Reshape" and node.input[1] in g.constants:
            shape = g.constants[node.input[1]]
            if export.anchors in shape.tolist():
                g.set_constant(node.input[1], np.where(shape == export.anchors, anchors_now, shape).astype(shape.dtype))
    _resize_io(g, export, size, anchors_now)


def _resize_io(g: _Graph, export: Export, size: tuple[int, int], anchors: int) -> None:
    (image,) = [i for i in g.graph.input if i.name == export.input]
    image.type.tensor_type.shape.dim[2].dim_value = size[1]
    image.type.tensor_type.shape.dim[3].dim_value = size[0]
    g.graph.output[0].type.tensor_type.shape.dim[2].dim_value = anchors
    del g.graph.value_info[:]  # shapes inferred for the old size
    _sort(g)
    _prune(g)
    try:
        onnx.checker.check_model(g.model)
        onnx.shape_inference.infer_shapes(g.model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        reason = " ".join(str(error).split())[:200]
        raise ConvertError(
            f"{export.path}: the graph does not run at {size[0]}x{size[1]} ({reason}); export it at that size "
            f"(yolo export format=onnx imgsz={size[1]},{size[0]})"
        ) from None


def prepare(model: onnx.ModelProto, export: Export, size: tuple[int, int]) -> onnx.ModelProto:
    """A copy of the export with its head rewritten for int8 at ``size`` (width, height)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = _Graph(copy, export.path)
    _split_class_branch(graph, export)
    _rescale_head(graph, export, size)
    return copy
