"""``deid info``: versions, CUDA and the model files found.
"""
from __future__ import annotations

import argparse
import json


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions, CUDA and which model files were found (JSON)")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from deid_core.envcheck import environment_report  # keeps deid --help free of torch
    print(json.dumps(environment_report(), indent=2))
    return 0
