"""`python -m workers.engine.models.build NAME --cache DIR`: build a pretrained preset offline.

`adaptinf models build NAME` runs this in a child process. Prints the directory, then the build
report (the stage-1 caption loss before and after alignment, for smol-llava) as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workers.engine.models.smol import SMOL_PRESETS, build_report, build_smol_preset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(SMOL_PRESETS))
    p.add_argument("--cache", type=Path, default=None, help="preset cache (default: $ADAPTINF_PRESET_CACHE)")
    args = p.parse_args(argv)
    try:
        directory = build_smol_preset(args.name, args.cache)
    except FileNotFoundError as exc:  # a package or the stamps are missing: say which, no traceback
        print(f"adaptinf: cannot build {args.name}: {exc}", file=sys.stderr)
        return 2
    print(directory)
    print(json.dumps(build_report(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
