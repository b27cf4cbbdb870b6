"""The ``appliance`` command: parses arguments, loads the config, runs a subcommand.

Every error the user can cause ends as one line on stderr and an exit status: 2 for the
configuration (and the command line), 3 for the models, 1 for anything else the appliance
reports. No traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from appliance import __version__
from appliance.config import Config, as_env, given_values, load_config, markdown_table
from appliance.errors import ApplianceError
from appliance.logs import setup_logging
from appliance.masking import mask_secrets


def _load(args: argparse.Namespace) -> Config:
    config = load_config(os.environ, args.env_file)
    setup_logging(config.log_level)
    return config


def _check(args: argparse.Namespace) -> int:
    from appliance.check import run_check

    run_check(_load(args), sys.stdout, repeats=args.repeat)
    return 0


def _config(args: argparse.Namespace) -> int:
    sys.stdout.write(markdown_table() if args.table else as_env(_load(args), reveal=args.show_secrets))
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):  # NaN fails the comparison
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (systemd's stop) or SIGINT (Ctrl-C)."""
    stop = threading.Event()

    def request_stop(number: int, _frame: object) -> None:
        logging.getLogger("appliance").info("%s received: stopping", signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _run(args: argparse.Namespace) -> int:
    from appliance.service import Service

    config = _load(args)
    return Service(config).run(_stop_on_signals())


def _demo(args: argparse.Namespace) -> int:
    from appliance.demo import run_demo

    given = given_values(os.environ, args.env_file)
    stop = _stop_on_signals()
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, stop.set)
        timer.daemon = True
        timer.start()
    return run_demo(given, sys.stdout, stop, scenario=args.scenario)


def _watch(args: argparse.Namespace) -> int:
    from appliance.mqtt.watch import run_watch

    return run_watch(args, _load(args), sys.stdout)


def _bench(args: argparse.Namespace) -> int:
    from appliance.bench import run_bench

    return run_bench(_load(args), args.out, quick=args.quick)


def _capture(args: argparse.Namespace) -> int:
    from appliance.capture import run_capture

    return run_capture(_load(args), args.camera, args.frames, args.out, every=args.every)


def _sim_list(_: argparse.Namespace) -> int:
    from appliance.sim.scenario import list_scenarios

    for scenario in list_scenarios():
        cameras = f"{len(scenario.cameras)} camera{'s' if len(scenario.cameras) > 1 else ''}"
        print(f"{scenario.name:16s} {cameras}, {scenario.duration:g} s: {scenario.description}")
    return 0


def _sim_render(args: argparse.Namespace) -> int:
    from appliance.sim.export import render_scenario
    from appliance.sim.scenario import load_scenario

    truth = render_scenario(load_scenario(args.scenario), args.out, args.seed, args.seconds)
    print(f"wrote {truth} and one MP4 per camera beside it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--env-file",
            type=Path,
            metavar="FILE",
            help="read APPLIANCE_* settings from FILE (KEY=value lines); the environment overrides it",
        )
        return sub

    check = command("check", "validate the config, load and run every model, print a table; exit 0, 2 or 3")
    check.add_argument("--repeat", type=int, default=5, metavar="N", help="timed invokes per model (default 5)")
    check.set_defaults(handler=_check)

    run = command("run", "run the appliance: cameras, detection, events, recording, MQTT (what systemd starts)")
    run.set_defaults(handler=_run)

    demo = command(
        "demo",
        "the synthetic world on both cameras, a private broker, and what watch prints; nothing else needed",
    )
    demo.add_argument("--seconds", type=_seconds, metavar="S", help="stop after S seconds (default: at Ctrl-C)")
    demo.add_argument("--scenario", default="shop-knife", help="a shipped scenario with two views (default shop-knife)")
    demo.set_defaults(handler=_demo)

    from appliance.mqtt.watch import add_arguments

    watch = command("watch", "print captions, alerts and events from the MQTT broker as they arrive, a line each")
    add_arguments(watch)
    watch.set_defaults(handler=_watch)

    bench = command("bench", "measure the models, the pipeline against the bare interpreter, memory and idle cost")
    bench.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for bench.json and bench.md")
    bench.add_argument("--quick", action="store_true", help="a short run that checks the benchmark works (CI)")
    bench.set_defaults(handler=_bench)

    capture = command("capture", "save frames from a configured camera, to calibrate models on the real scene")
    capture.add_argument("--camera", type=int, choices=(0, 1), default=0, help="camera slot (default 0)")
    capture.add_argument("--frames", type=int, default=200, metavar="K", help="frames to save (default 200)")
    capture.add_argument(
        "--every", type=float, default=1.0, metavar="S", help="seconds between saved frames (default 1)"
    )
    capture.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the frames into")
    capture.set_defaults(handler=_capture)

    config = command("config", "print the effective settings as an env file")
    config.add_argument("--table", action="store_true", help="print the settings table of the README instead")
    config.add_argument(
        "--show-secrets", action="store_true", help="print the MQTT password and the passwords in URIs as they are"
    )
    config.set_defaults(handler=_config)

    sim = commands.add_parser("sim", help="the synthetic world: scenarios with ground truth, standing in for cameras")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    sim_commands.add_parser("list", help="name the shipped scenarios").set_defaults(handler=_sim_list)
    render = sim_commands.add_parser("render", help="write one MP4 per camera and truth.json with the per-frame truth")
    render.add_argument("scenario", help="a shipped scenario's name, or a path to a scenario .json file")
    render.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
    render.add_argument("--seed", type=int, default=0, help="the world's seed (default 0)")
    render.add_argument("--seconds", type=float, metavar="S", help="render only the first S seconds")
    render.set_defaults(handler=_sim_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ApplianceError as error:
        print(f"appliance: {mask_secrets(str(error))}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        return 130
    return status
