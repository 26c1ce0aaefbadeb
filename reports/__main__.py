"""``python -m reports build --results <sweep dir or store> --out <dir>``, and
``python -m reports diff <store> <store>`` (are two sweeps' numbers the same?).

A mistake on the command line (a missing or empty results path, an ``--out`` that is a file, a
value not allowed, an unreadable results file without ``--skip-bad``) ends the command with one
line on stderr naming the value, exit status 2, and nothing written."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from typing import NoReturn

from gradprobe.extras import require

require("reports", "scipy", "jinja2", "tabulate", command="python -m reports")

import matplotlib  # noqa: E402 - after the check above

from reports.build import build_report  # noqa: E402
from reports.diff import diff_stores  # noqa: E402
from reports.load import METRICS  # noqa: E402
from reports.screen import BadResultsError  # noqa: E402
from reports.stats import ALPHA  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a significance level (expected a number between 0 and 1, e.g. 0.05)"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the build; prints the coverage summary."""
    parser = _Parser(prog="python -m reports", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build", help="write the paper's tables, Fig. 2 and the gradient-precision report"
    )
    build.add_argument(
        "--results", required=True, nargs="+", action="extend",
        help="sweep dirs, results/ stores or folders of sweep dirs (run ids are then prefixed "
        "with the sweep's name)",
    )  # fmt: skip
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument(
        "--metric", choices=METRICS, default="test_top1",
        help="accuracy: final epoch (default) or best over epochs (as the DVS reference reports)",
    )  # fmt: skip
    build.add_argument(
        "--alpha", type=_alpha, default=ALPHA, help="Welch t-test level (default %(default)s)"
    )
    build.add_argument(
        "--errorbar", choices=("sd", "ci"), default="sd",
        help="figure bands over seeds: ±1 sd (default) or 95%% bootstrap CI",
    )  # fmt: skip
    build.add_argument(
        "--probe-x", choices=("epoch", "step"), default="epoch",
        help="x axis of the precision curves (default %(default)s)",
    )  # fmt: skip
    build.add_argument("--no-figures", action="store_true", help="tables only")
    build.add_argument(
        "--skip-bad", action="store_true",
        help="build without results files that cannot be read (listed in coverage.md) instead "
        "of stopping",
    )  # fmt: skip
    diff = commands.add_parser(
        "diff",
        help="compare the run documents of two stores, timings and provenance aside; exit 1 "
        "if any number differs",
    )
    diff.add_argument("first", help="a sweep dir or results/ store")
    diff.add_argument("second", help="another sweep dir or results/ store")
    args = parser.parse_args(argv)
    if args.command == "diff":
        return _diff(args.first, args.second)

    matplotlib.use("Agg")  # files only; a library import leaves a notebook's backend alone
    command = shlex.join(["python", "-m", "reports", *(sys.argv[1:] if argv is None else argv)])
    try:
        with warnings.catch_warnings():  # unreadable files: reported below and in coverage.md
            warnings.filterwarnings("ignore", "skipping results file", UserWarning)
            report = build_report(
                args.results, args.out, metric=args.metric, alpha=args.alpha,
                errorbar=args.errorbar, probe_x=args.probe_x, figures=not args.no_figures,
                skip_bad=args.skip_bad, build=command,
            )  # fmt: skip
    except (FileNotFoundError, NotADirectoryError, PermissionError, BadResultsError) as error:
        for line in str(error).splitlines():
            print(f"python -m reports build: {line}", file=sys.stderr)
        return 2
    sys.stdout.write(report.coverage)
    print(f"\nwrote {len(report.files)} files to {args.out}")
    return 0


def _diff(first: str, second: str) -> int:
    try:
        result = diff_stores(first, second)
    except (FileNotFoundError, ValueError) as error:
        print(f"python -m reports diff: {error}", file=sys.stderr)
        return 2
    print("\n".join(result.lines()))
    return 0 if result.identical else 1


if __name__ == "__main__":
    sys.exit(main())
