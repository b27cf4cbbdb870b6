"""Command line of the toolchain: ``python -m tools.convert COMMAND ...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.inference.manifest import default_models_dir
from tools.convert import ConvertError
from tools.convert.slots import CaptionerConversion, ClassifierConversion, DetectorConversion, SlotConversion
from tools.convert.tflite import IO_TYPES


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


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
    keras = commands.add_parser(
        "keras",
        help="convert a Keras model or SavedModel to int8 TFLite for one slot, validate it, update the manifest",
        description="Convert a Keras model (.keras) or a SavedModel to full-integer int8 TFLite for one model slot, "
        "calibrated on frames sampled evenly from a folder of images or videos; compare it with the float model "
        "on held-out frames; write the .tflite, a metadata JSON beside it, and update manifest.json.",
    )
    slots = keras.add_subparsers(dest="slot", required=True, metavar="SLOT")

    def slot_parser(name: str, help: str) -> argparse.ArgumentParser:
        sub = slots.add_parser(name, help=help, description=help)
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
        return sub

    detector = slot_parser("detector", "a yolov8-contract detector: output [1, 4 + classes, anchors]")
    detector.add_argument("model", type=Path, help=".keras file or SavedModel folder")
    detector.add_argument("--labels", type=Path, required=True, metavar="FILE", help="class names, one per line")
    detector.add_argument("--person-label", default="person", metavar="NAME", help="the person class (default person)")
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
    return parser


def _keras(args: argparse.Namespace, command: str) -> int:
    from tools.convert.pipeline import Request, run

    conversion: SlotConversion
    if args.slot == "detector":
        conversion = DetectorConversion(args.person_label, args.coords)
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
    request = Request(
        conversion, sources, data, args.calib, args.calib_frames, args.out, args.io, args.threads, command
    )
    report = run(request)
    for role, (float_bytes, int8_bytes) in report.sizes.items():
        name = conversion.model_files[role]
        print(
            f"{args.slot} {role}: {args.out / name}, {int8_bytes / 1024:.0f} KiB (float {float_bytes / 1024:.0f} KiB)"
        )
    print(report.agreement.summary)
    print(f"wrote {report.metadata} and updated {args.out / 'manifest.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    command = "python -m tools.convert " + shlex.join(arguments)
    try:
        return _keras(args, command)
    except ConvertError as error:
        print(f"tools.convert: {error}", file=sys.stderr)
        return 2
    except ApplianceError as error:
        print(f"tools.convert: {error}", file=sys.stderr)
        return error.exit_status
