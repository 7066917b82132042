"""The ``ctseg`` command line.

Each subcommand lives in its own module ``ctseg_lib/cli/<name>.py`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``.  Heavy imports (torch, ...) happen inside
``run`` so ``ctseg --help`` stays fast.

Errors: a :class:`~ctseg_lib.errors.CTSegError` (bad input) is printed as one line
``ctseg <cmd>: error: <message>`` and exits with status 2; ``--debug`` shows the traceback.
Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import CTSegError

COMMANDS = ("synth", "info", "download", "convert", "preprocess", "train", "predict", "evaluate", "view")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctseg", description="CT tumour segmentation with U-Net (ctseg_lib).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:  # a subcommand not built yet
            if e.name == f"{__name__}.{name}":
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CTSegError as e:
        if args.debug:
            raise
        print(f"ctseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as e:  # disk full, permission denied, ... : still one line
        if args.debug:
            raise
        print(f"ctseg {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
