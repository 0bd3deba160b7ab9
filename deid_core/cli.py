"""The ``deid`` command line: argument parsing only; every command calls the package's functions.

Each subcommand is one ``_add_<name>(sub)`` function that defines its arguments and sets
``func`` to a small runner. Errors of type :class:`DeidError` are printed without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from deid_core import __version__
from deid_core.errors import DeidError


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions, CUDA and which model files were found (JSON)")

    def run(args: argparse.Namespace) -> int:
        from deid_core.envcheck import environment_report
        print(json.dumps(environment_report(), indent=2))
        return 0

    p.set_defaults(func=run)


COMMANDS = [_add_info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid", description="Live face de-identification in video (Gafni et al., ICCV 2019).")
    parser.add_argument("--version", action="version", version=f"deid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DeidError as exc:
        print(f"deid {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"deid {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
