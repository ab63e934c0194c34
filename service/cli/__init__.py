"""The `adaptinf` command: operator commands (admin, run) and client commands, one module each.

Each module exposes `register(subparsers)`, which adds its commands with `set_defaults(func=...)`;
a command function takes the parsed args and returns the process exit code.
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_BROKEN_PIPE = 128 + 13  # the shell's code for SIGPIPE, as `yes | head -1` gives


def build_parser() -> argparse.ArgumentParser:
    from service.cli import admin, client, run

    parser = argparse.ArgumentParser(prog="adaptinf", description="Adapt-∞ data-selection service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, admin, client):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader left (`adaptinf datasets list --json | head -1`): stop quietly. Python's
        # recipe: point stdout at /dev/null so the interpreter's last flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
