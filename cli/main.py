"""The `stylefarm` command.

Subcommands are listed in COMMANDS as "module:function"; the function adds its options to
the subparser and returns the callable that runs it. Modules stay light at import (no
torch, no Flask): heavy imports happen inside the runner, so `stylefarm --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

PROG = "stylefarm"

# name -> "module:function(parser) -> runner(args) -> exit status". Add new commands here.
COMMANDS: dict[str, str] = {
    "render": "cli.render:render_command",
    "demo": "cli.demo:demo_command",
    "api": "cli.stack:api_command",
    "worker": "cli.stack:worker_command",
    "up": "cli.stack:up_command",
    "submit": "cli.client:submit_command",
    "fetch": "cli.client:fetch_command",
    "status": "cli.client:status_command",
}


class UsageError(Exception):
    """A bad input the user can fix: reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are one line (`stylefarm: error: ...`) without the usage dump."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


Runner = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Neural style transfer render farm.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       parser_class=OneLineParser)
    for name, target in COMMANDS.items():
        module_name, function_name = target.split(":")
        configure = getattr(importlib.import_module(module_name), function_name)
        summary = (configure.__doc__ or "").strip().splitlines()[0] if configure.__doc__ else ""
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=configure(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Through the package module, so that commands raising cli.main.UsageError are caught.
    from cli.main import main as package_main

    sys.exit(package_main())
