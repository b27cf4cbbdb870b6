"""Command line of the toolchain: ``python -m tools.convert COMMAND ...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.inference.manifest import DOMAINS, REAL, SLOTS, Domain, default_models_dir
from tools.convert import ConvertError
from tools.convert.model_card import refresh_card
from tools.convert.slots import CaptionerConversion, ClassifierConversion, DetectorConversion, SlotConversion
from tools.convert.tflite import IO_TYPES


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _detector_size(text: str) -> tuple[int, int]:
    """``N`` (a square input) or ``WxH``, each a multiple of the detector's largest stride."""
    width, x, height = text.lower().partition("x")
    try:
        size = (int(width), int(height) if x else int(width))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH in pixels, got {text}") from None
    if min(size) < 32 or size[0] % 32 or size[1] % 32:
        raise argparse.ArgumentTypeError(f"expected N or WxH, each a multiple of 32 from 32 up, got {text}")
    return size


def _slots(text: str) -> tuple[str, ...]:
    """Comma-separated slot names, in the slots' own order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(SLOTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected slots among {', '.join(SLOTS)}, got {text}")
    return tuple(name for name in SLOTS if name in names)


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated class names."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected class names separated by commas, got {text!r}")
    return names


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.convert",
        description="Turn trained models into the full-integer int8 TFLite files and manifest the appliance runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_keras(commands)
    _add_training(commands)
    _add_reference(commands)
    _add_fetch(commands)
    _add_yolo(commands)
    return parser


Commands = Any  # argparse's private _SubParsersAction


def _add_keras(commands: Commands) -> None:
    keras = commands.add_parser(
        "keras",
        help="convert a Keras model or SavedModel to int8 TFLite for one slot, validate it, update the manifest",
        description="Convert a Keras model (.keras) or a SavedModel to full-integer int8 TFLite for one model slot, "
        "calibrated on frames sampled evenly from a folder of images or videos; compare it with the float model "
        "on held-out frames; write the .tflite, a metadata JSON beside it, and update manifest.json.",
    )
    slots = keras.add_subparsers(dest="slot", required=True, metavar="SLOT")

    def slot_parser(name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = slots.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--calib", type=Path, required=True, metavar="DIR", help="images and/or videos to calibrate on"
        )
        sub.add_argument(
            "--calib-frames", type=_positive, default=200, metavar="N", help="frames to sample (default 200)"
        )
        sub.add_argument(
            "--out", type=Path, default=default_models_dir(), metavar="DIR", help="models folder to update"
        )
        sub.add_argument("--io", choices=IO_TYPES, default="int8", help="type of the model's inputs and outputs")
        sub.add_argument("--threads", type=_positive, default=2, metavar="N", help="interpreter threads for validation")
        _add_domain(sub, None, "default: not said, and the appliance then validates the model for no camera")
        return sub

    detector = slot_parser("detector", "a yolov8-contract detector: output [1, 4 + classes, anchors]")
    detector.add_argument("model", type=Path, help=".keras file or SavedModel folder")
    detector.add_argument("--labels", type=Path, required=True, metavar="FILE", help="class names, one per line")
    detector.add_argument(
        "--person-labels",
        type=_names,
        default=("person",),
        metavar="NAMES",
        help="the classes that are people, comma-separated (default person)",
    )
    detector.add_argument(
        "--fall-labels", type=_names, default=(), metavar="NAMES", help="the person classes that mean a fallen person"
    )
    detector.add_argument(
        "--coords",
        choices=("auto", "normalized", "pixels"),
        default="auto",
        help="box units of the output; auto decides from the float model's outputs",
    )

    classifier = slot_parser("classifier", "a MobileNetV2 classifier of person crops (input scaled to -1..1)")
    classifier.add_argument("model", type=Path, help=".keras file or SavedModel folder")
    classifier.add_argument("--labels", type=Path, required=True, metavar="FILE", help="label names, one per line")
    classifier.add_argument(
        "--crop-margin", type=_fraction, default=0.15, metavar="F", help="crop margin the model was trained with"
    )
    classifier.add_argument(
        "--output", choices=("auto", "probabilities", "logits"), default="auto", help="what the model outputs"
    )

    captioner = slot_parser("captioner", "an encoder and an attention-GRU step decoder")
    captioner.add_argument("encoder", type=Path, help="encoder: image -> features")
    captioner.add_argument("decoder", type=Path, help="decoder: features, token, hidden -> logits, new_hidden")
    captioner.add_argument(
        "--vocab", type=Path, required=True, metavar="FILE", help="the vocabulary, one token per line"
    )
    captioner.add_argument("--start-token", default="<start>", metavar="TOKEN")
    captioner.add_argument("--end-token", default="<end>", metavar="TOKEN")
    captioner.add_argument("--max-length", type=_positive, default=20, metavar="N", help="longest caption in tokens")


def _add_training(commands: Commands) -> None:
    def training_parser(name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--work", type=Path, default=Path("work") / name, metavar="DIR", help="where the trained Keras model goes"
        )
        sub.add_argument(
            "--out", type=Path, default=default_models_dir(), metavar="DIR", help="models folder to update"
        )
        sub.add_argument(
            "--calib", type=Path, metavar="DIR", help="calibration images or videos (default: the training images)"
        )
        sub.add_argument("--calib-frames", type=_positive, default=300, metavar="N", help="frames to calibrate on")
        sub.add_argument("--epochs", type=_positive, metavar="N", help="training epochs")
        sub.add_argument("--resume", action="store_true", help="keep a model already trained in --work")
        _add_domain(sub, REAL, "default: real, the data set given")
        return sub

    detector_training = training_parser(
        "detector", "train the small yolov8-contract person detector on a COCO detection file, then convert it"
    )
    detector_training.add_argument("--coco", type=Path, required=True, metavar="FILE", help="COCO instances JSON")
    detector_training.add_argument("--images", type=Path, required=True, metavar="DIR", help="the images it names")
    detector_training.add_argument(
        "--negatives",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="images with nobody in them (empty scenes: night, shadows, plants) to learn as background; repeatable",
    )
    detector_training.add_argument(
        "--size",
        type=_detector_size,
        metavar="N|WxH",
        help="input size in pixels: N for a square, WxH (multiples of 32) for a camera's shape (default: the recipe's)",
    )
    detector_training.add_argument(
        "--depth", type=_positive, metavar="N", help="residual blocks at each stride (default: the recipe's, 1)"
    )

    classifier_training = training_parser(
        "classifier",
        "fine-tune a MobileNetV2 classifier on a folder with one subfolder per label (images and videos), "
        "on person crops made with --detector, then convert it",
    )
    classifier_training.add_argument(
        "dataset", type=Path, help="folder with one subfolder per label, holding images and/or videos"
    )
    classifier_training.add_argument(
        "--detector",
        type=Path,
        metavar="DIR",
        help="a models folder whose detector slot finds the persons to crop (default: images are crops already)",
    )
    classifier_training.add_argument(
        "--frame-step", type=_positive, default=5, metavar="K", help="use every K-th frame of a video (default 5)"
    )
    classifier_training.add_argument(
        "--batch", type=_positive, default=64, metavar="N", help="crops per training step (default 64)"
    )
    classifier_training.add_argument("--size", type=_positive, help="input size in pixels (default: the recipe's, 96)")
    classifier_training.add_argument(
        "--weights", type=Path, metavar="FILE", help="MobileNetV2 ImageNet weights (.h5) to start from"
    )

    captioner_training = training_parser(
        "captioner", "train the encoder and attention-GRU decoder on a COCO captions file, then convert them"
    )
    captioner_training.add_argument("--captions", type=Path, required=True, metavar="FILE", help="COCO captions JSON")
    captioner_training.add_argument("--images", type=Path, required=True, metavar="DIR", help="the images it names")
    captioner_training.add_argument(
        "--max-length", type=_positive, default=16, metavar="N", help="longest caption in tokens"
    )


def _add_reference(commands: Commands) -> None:
    reference = commands.add_parser(
        "reference",
        help="make the reference models from the synthetic world, from scratch, and their model card",
        description="Render synthetic training and held-out sets, train the three models, convert them to int8, "
        "measure float and int8 and write the models, metrics.json and the model card (models/README.md).",
    )
    reference.add_argument(
        "--work", type=Path, default=Path("work") / "reference", metavar="DIR", help="data sets and trained models"
    )
    reference.add_argument(
        "--out", type=Path, default=default_models_dir(), metavar="DIR", help="models folder to write"
    )
    reference.add_argument(
        "--quick", action="store_true", help="a few minutes on tiny data: checks the chain, makes weak models"
    )
    reference.add_argument("--fresh", action="store_true", help="start over instead of going on from --work")
    reference.add_argument(
        "--slots",
        type=_slots,
        default=SLOTS,
        metavar="NAMES",
        help="retrain only these (comma-separated); the others stay as they are in --out, with their figures "
        "from its metrics.json (default: all three)",
    )


def _add_fetch(commands: Commands) -> None:
    from tools.convert.fetch import DEFAULT_LIST

    fetch = commands.add_parser(
        "fetch",
        help="download pinned upstream weights (Ultralytics YOLO, Keras MobileNetV2), checked by size and SHA-256",
        description="Download the named artifacts of the pinned list into --dir, resuming partial downloads, and "
        "refuse any file whose size or SHA-256 differs from the list. Without names, show the list.",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="artifacts to download (see the list)")
    fetch.add_argument("--dir", type=Path, default=Path("work") / "downloads", metavar="DIR", help="where the files go")
    fetch.add_argument("--list", type=Path, default=DEFAULT_LIST, metavar="FILE", help="the pinned list (JSON)")
    fetch.add_argument(
        "--record", action="store_true", help="fetch entries not pinned yet and write their size and SHA-256"
    )
    fetch.add_argument("--timeout", type=float, default=30.0, metavar="S", help="network timeout in seconds")


def _add_yolo(commands: Commands) -> None:
    yolo = commands.add_parser(
        "yolo",
        help="convert an Ultralytics YOLOv8/YOLO11 detector (ONNX export or .pt) to the int8 detector slot",
        description="Convert an Ultralytics v8/11 detection model to full-integer int8 TFLite through onnx2tf (run "
        "in its own Python >= 3.12 environment, made on first use in .venv-onnx2tf/), calibrated on --calib; "
        "boxes are normalised to 0..1 inside the model; compare int8 with float and update the manifest.",
    )
    yolo.add_argument("model", type=Path, help="ONNX export (.onnx), or a .pt checkpoint when ultralytics is installed")
    yolo.add_argument(
        "--size",
        type=_detector_size,
        metavar="N|WxH",
        help="input size: N for a square, WxH (multiples of 32) for a camera's shape; default: the export's own",
    )
    yolo.add_argument(
        "--labels", type=Path, metavar="FILE", help="class names, one per line (default: the export's metadata)"
    )
    yolo.add_argument(
        "--person-labels",
        type=_names,
        metavar="NAMES",
        help="the classes that are people, comma-separated (default: person, or every class of a model without one)",
    )
    yolo.add_argument(
        "--fall-labels",
        type=_names,
        metavar="NAMES",
        help="the person classes that mean a fallen person (default: those named fall, fallen, down, lying ...)",
    )
    yolo.add_argument(
        "--calib", type=Path, required=True, metavar="DIR", help="frames of the watched scene: images and/or videos"
    )
    yolo.add_argument("--calib-frames", type=_positive, default=200, metavar="N", help="frames to sample (default 200)")
    yolo.add_argument("--out", type=Path, default=default_models_dir(), metavar="DIR", help="models folder to update")
    yolo.add_argument(
        "--work", type=Path, default=Path("work") / "yolo", metavar="DIR", help="where the SavedModel and logs go"
    )
    yolo.add_argument("--io", choices=IO_TYPES, default="int8", help="type of the model's inputs and outputs")
    yolo.add_argument("--threads", type=_positive, default=2, metavar="N", help="interpreter threads for validation")
    _add_domain(yolo, REAL, "default: real, what the export's metadata says it was trained on")


def _add_domain(parser: argparse.ArgumentParser, default: str | None, said: str) -> None:
    """--domain and --data: what the model was trained on, for the manifest (the appliance lets a model speak
    about a camera only where they agree: synthetic models about the sim: world, real ones elsewhere)."""
    parser.add_argument(
        "--domain",
        choices=DOMAINS,
        default=default,
        help=f"what the model was trained on: real images, or the appliance's synthetic world ({said})",
    )
    parser.add_argument("--data", metavar="NAME", help="the data set it was trained on, in words")


def _yolo(args: argparse.Namespace, command: str) -> int:
    from tools.convert.yolo import YoloRequest, convert_yolo

    request = YoloRequest(
        model=args.model,
        size=args.size,
        labels=args.labels,
        person_labels=args.person_labels,
        fall_labels=args.fall_labels,
        calib=args.calib,
        calib_frames=args.calib_frames,
        out=args.out,
        work=args.work,
        io=args.io,
        threads=args.threads,
        command=command,
        domain=args.domain,
        data=args.data,
    )
    report, _, _ = convert_yolo(request)
    float_bytes, int8_bytes = report.sizes["model"]
    print(f"detector: {args.out / 'detector.tflite'}, {int8_bytes / 1024:.0f} KiB (float {float_bytes / 1024:.0f} KiB)")
    print(report.agreement.summary)
    params = report.entry.params
    print(f"presence scores: {params['presence_score']} / {params['confirm_score']} ({params['presence_source']})")
    print(f"wrote {report.metadata} and updated {args.out / 'manifest.json'}")
    print(f"report: {args.out / 'detector-report.md'}")
    if refresh_card(args.out):
        print(f"the model card {args.out / 'README.md'} now describes this detector")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from tools.convert.fetch import describe, fetch_all

    if not args.names:
        print(describe(args.list))
        return 0
    fetch_all(args.names, args.dir, args.list, args.record, args.timeout)
    return 0


def _keras(args: argparse.Namespace, command: str) -> int:
    from tools.convert.pipeline import Request, run

    conversion: SlotConversion
    if args.slot == "detector":
        conversion = DetectorConversion(args.person_labels, args.fall_labels, args.coords)
        sources, data = {"model": args.model}, {"labels": args.labels}
    elif args.slot == "classifier":
        conversion = ClassifierConversion(args.crop_margin, args.output)
        sources, data = {"model": args.model}, {"labels": args.labels}
    else:
        conversion = CaptionerConversion(args.start_token, args.end_token, args.max_length)
        sources, data = {"encoder": args.encoder, "decoder": args.decoder}, {"vocab": args.vocab}
    for path in data.values():
        if not path.is_file():
            raise ConvertError(f"{path}: no such file")
    if args.domain is None:
        print("note: without --domain the manifest does not say what the model was trained on: it alerts nowhere")
    domain = Domain(kind=args.domain, data=args.data or str(next(iter(sources.values())))) if args.domain else None
    request = Request(
        conversion,
        sources,
        data,
        args.calib,
        args.calib_frames,
        args.out,
        args.io,
        args.threads,
        command,
        domain=domain,
    )
    report = run(request)
    report_slot = args.slot
    for role, (float_bytes, int8_bytes) in report.sizes.items():
        name = conversion.model_files[role]
        print(
            f"{args.slot} {role}: {args.out / name}, {int8_bytes / 1024:.0f} KiB (float {float_bytes / 1024:.0f} KiB)"
        )
    print(report.agreement.summary)
    print(f"wrote {report.metadata} and updated {args.out / 'manifest.json'}")
    print(f"report: {args.out / (report_slot + '-report.md')}")
    if args.slot == "detector" and refresh_card(args.out):
        print(f"the model card {args.out / 'README.md'} now describes this detector")
    return 0


def _data_of(args: argparse.Namespace) -> str:
    """The data set a training command was given, for the manifest."""
    given = {"detector": "coco", "classifier": "dataset", "captioner": "captions"}[args.command]
    return str(getattr(args, given))


def _training(args: argparse.Namespace, command: str) -> int:
    from dataclasses import replace

    from tools.convert import train
    from tools.convert.train_captioner import CaptionerRecipe
    from tools.convert.train_classifier import ClassifierRecipe
    from tools.convert.train_detector import DetectorRecipe

    domain = Domain(kind=args.domain, data=args.data or _data_of(args))
    to = train.Destination(args.work, args.out, command, args.calib_frames, resume=args.resume, domain=domain)
    # options left out keep the recipe's defaults, so the command line and the recipes cannot disagree
    given = {name: getattr(args, name) for name in ("epochs", "size", "depth") if getattr(args, name, None)}
    if args.command == "detector":
        detector = replace(DetectorRecipe(), **given)
        summary = train.detector(args.coco, args.images, detector, to, args.calib, args.negatives)
    elif args.command == "classifier":
        recipe = ClassifierRecipe(weights=args.weights, frame_step=args.frame_step, batch=args.batch)
        summary = train.classifier(args.dataset, replace(recipe, **given), to, args.calib, args.detector)
    else:
        captioner = replace(CaptionerRecipe(max_length=args.max_length), **given)
        summary = train.captioner(args.captions, args.images, captioner, to, args.calib)
    print(summary)
    print(f"updated {args.out / 'manifest.json'}; report: {args.out / (args.command + '-report.md')}")
    return 0


def _reference(args: argparse.Namespace) -> int:
    from tools.convert.reference import QUICK, Plan, run_reference

    run_reference(args.work, args.out, QUICK if args.quick else Plan(), fresh=args.fresh, slots=args.slots)
    print(f"wrote the reference models, metrics.json and README.md to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    command = "python -m tools.convert " + shlex.join(arguments)
    handlers = {
        "keras": lambda: _keras(args, command),
        "reference": lambda: _reference(args),
        "fetch": lambda: _fetch(args),
        "yolo": lambda: _yolo(args, command),
    }
    try:
        return handlers.get(args.command, lambda: _training(args, command))()
    except ConvertError as error:
        print(f"tools.convert: {error}", file=sys.stderr)
        return 2
    except ApplianceError as error:
        print(f"tools.convert: {error}", file=sys.stderr)
        return error.exit_status
