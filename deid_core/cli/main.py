"""The ``deid`` command line: argument parsing only; every command calls the package's functions.

Each subcommand is one ``add_<name>(sub)`` function (one small module per command group) that
defines its arguments and sets ``func`` to a small runner. Errors of type :class:`DeidError`
are printed without a traceback.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from deid_core import __version__
from deid_core.cli.audit import add_audit
from deid_core.cli.eval import add_eval
from deid_core.cli.image import add_align, add_embed, add_image
from deid_core.cli.info import add_info
from deid_core.cli.train import add_export, add_prepare, add_train
from deid_core.cli.video import add_live, add_video
from deid_core.errors import DeidError


COMMANDS = [add_info, add_align, add_video, add_live, add_prepare, add_embed, add_train, add_export,
            add_image, add_audit, add_eval]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid", description="Live face de-identification in video (Gafni et al., ICCV 2019).")
    parser.add_argument("--version", action="version", version=f"deid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``finally`` removes its temp files."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # spinning OpenMP threads slow inference 10x+ next to another process (pipeline.default_threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:                 # not the main thread (embedded use): leave it alone
        pass
    try:
        return int(args.func(args) or 0)
    except DeidError as exc:
        print(f"deid {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"deid {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"deid {args.command}: interrupted", file=sys.stderr)
        return 130
