"""The ``prodlens`` command: ``config``, ``slice``, ``affected``, ``watch``, ``incidents``,
``demo``, ``rules``, ``notify``.

Sub-commands live with what they drive; this module only dispatches, importing each lazily so
``prodlens config`` works with the core install alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_config_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "config",
        help="print the effective configuration read from the environment",
        description="Print every PRODLENS_* setting, its value and where it came from, the "
        "frameworks and instrumentations found and what each source can read here. Exits 2 "
        "listing every problem (invalid values, unknown PRODLENS_* variables) when there are any.",
    )
    parser.add_argument("--markdown", action="store_true",
                        help="print the reference table of every variable (for the docs)")
    parser.set_defaults(handler=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    from prodlens._environment import describe_environment
    from prodlens.config import read_environment, reference_markdown

    if args.markdown:
        print(reference_markdown(), end="")
        return 0
    # Read as zero-code set-up reads it: every problem at once, each bad setting at its default.
    settings, problems = read_environment()
    rows = settings.describe()
    width = max(len(env) for env, _, _ in rows)
    value_width = min(40, max(len(value) for _, value, _ in rows))
    for env, value, origin in rows:
        print(f"{env:<{width}}  {value:<{value_width}}  {origin}")
    print()
    for line in describe_environment(settings):
        print(line)
    if not problems:
        return 0
    print(f"prodlens: invalid configuration ({len(problems)} problems):" if len(problems) > 1
          else "prodlens: invalid configuration:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``prodlens`` command."""
    parser = argparse.ArgumentParser(
        prog="prodlens",
        description="Find which subgroup of customers is failing, and who was affected.",
    )
    from prodlens import __version__

    parser.add_argument("--version", action="version", version=f"prodlens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_config_command(subparsers)
    try:
        from prodlens.analysis.commands import add_commands as add_analysis_commands
    except ImportError:  # pragma: no cover - a broken install: say so instead of crashing
        pass
    else:
        add_analysis_commands(subparsers)
    try:
        from prodlens.live.commands import add_commands as add_live_commands
    except ImportError:  # pragma: no cover
        pass
    else:
        add_live_commands(subparsers)
    try:
        from prodlens.demo.commands import add_commands as add_demo_commands
    except ImportError:  # pragma: no cover
        pass
    else:
        add_demo_commands(subparsers)
    try:
        from prodlens.alerting.commands import add_commands as add_alerting_commands
    except ImportError:  # pragma: no cover
        pass
    else:
        add_alerting_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prodlens`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    status: int = handler(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
