"""The ``appliance`` command: parses arguments, loads the config, runs a subcommand.

Every error the user can cause ends as one line on stderr and an exit status: 2 for the
configuration (and the command line), 3 for the models, 1 for anything else the appliance
reports. No traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance import __version__
from appliance.config import Config, as_env, load_config, markdown_table
from appliance.errors import ApplianceError
from appliance.logs import setup_logging


def _load(args: argparse.Namespace) -> Config:
    config = load_config(os.environ, args.env_file)
    setup_logging(config.log_level)
    return config


def _check(args: argparse.Namespace) -> int:
    from appliance.check import run_check

    run_check(_load(args), sys.stdout, repeats=args.repeat)
    return 0


def _config(args: argparse.Namespace) -> int:
    sys.stdout.write(markdown_table() if args.table else as_env(_load(args)))
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

    config = command("config", "print the effective settings as an env file")
    config.add_argument("--table", action="store_true", help="print the settings table of the README instead")
    config.set_defaults(handler=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ApplianceError as error:
        print(f"appliance: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        return 130
    return status
