"""``alphapulse kinds``: list the registered node kinds, or print one kind's params schema."""

from __future__ import annotations

import argparse
import json

from alphapulse.kinds import load_kinds

HELP = "list node kinds, or show one kind's parameter schema"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="show this kind's params schema")


def run(args: argparse.Namespace) -> int:
    kinds = load_kinds()
    if args.kind:
        spec = kinds.get(args.kind)
        if spec is None:
            print(f"unknown kind {args.kind!r}; known: {', '.join(kinds)}")
            return 2
        print(json.dumps(spec.params_schema(), indent=2))
        return 0
    width = max((len(name) for name in kinds), default=0)
    for name, spec in kinds.items():
        print(f"{name:<{width}}  {spec.role.value:<9}  {spec.summary}")
    return 0
