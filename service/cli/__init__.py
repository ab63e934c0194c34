"""The `adaptinf` command: operator commands (admin, run) and client commands, one module each.

Each module exposes `register(subparsers)`, which adds its commands with `set_defaults(func=...)`;
a command function takes the parsed args and returns the process exit code.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from service.cli import admin, client, run

    parser = argparse.ArgumentParser(prog="adaptinf", description="Adapt-∞ data-selection service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, admin, client):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
