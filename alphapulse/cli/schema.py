"""``alphapulse schema``: print, write or check the generated JSON Schemas under ``schemas/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alphapulse.cli import ExitCode
from alphapulse.topology import (
    default_schema_dir,
    generated_files,
    stale_schema_files,
    write_schema_files,
)

HELP = "print the topology JSON Schema; --write/--check the files under schemas/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true",
                        help="regenerate schemas/topology.schema.json and schemas/nodes/*")
    action.add_argument("--check", action="store_true",
                        help="exit 1 if the files differ from what --write would produce")
    parser.add_argument("--dir", type=Path, default=None,
                        help="schema directory (default: schemas/ in the repository)")
    parser.add_argument("--kind", help="print this kind's params schema instead")


def run(args: argparse.Namespace) -> int:
    directory = args.dir or default_schema_dir()
    if args.write:
        changed = write_schema_files(directory)
        for rel in changed:
            print(f"wrote {directory / rel}")
        if not changed:
            print(f"{directory}: up to date")
        return ExitCode.OK
    if args.check:
        stale = stale_schema_files(directory)
        for rel in stale:
            print(f"{directory / rel}: out of date; run `alphapulse schema --write`",
                  file=sys.stderr)
        return ExitCode.INVALID if stale else ExitCode.OK
    files = generated_files()
    rel = f"nodes/{args.kind}.schema.json" if args.kind else "topology.schema.json"
    if rel not in files:
        print(f"unknown kind {args.kind!r}; `alphapulse kinds` lists them", file=sys.stderr)
        return ExitCode.USAGE
    sys.stdout.write(files[rel])
    return ExitCode.OK
