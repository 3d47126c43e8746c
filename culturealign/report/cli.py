"""Console scripts: `culturealign-report`, `culturealign-audit` and `culturealign-ui` (argparse, no Hydra:
they read tracked runs, they do not compose jobs). User errors print one line and exit 1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from culturealign.errors import CultureAlignError
from culturealign.report.runs import DEFAULT_EXPERIMENT, default_tracking_uri


def _tracking_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db, as for runs)",
    )


def _run(parser: argparse.ArgumentParser, action, argv) -> int:
    args = parser.parse_args(argv)
    args.tracking_uri = args.tracking_uri or default_tracking_uri()
    try:
        action(args)
    except CultureAlignError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


def report_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="culturealign-report",
        description="Table 1, paired differences, reference points, per-question drill-down and figures "
        "for a sweep; written to a folder and logged to the sweep's parent run.",
    )
    _tracking_option(parser)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--parent-run", default=None, help="the sweep's parent run id (default: the latest sweep)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/reports/<parent run id>)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    parser.add_argument("--world", action="store_true", help="add the world report (ranking, human-similarity "
                        "heatmap) even when the sweep has fewer than 8 countries")  # fmt: skip
    return _run(parser, _report, argv)


def _report(args) -> None:
    from culturealign.report.build import build_report

    report = build_report(args.tracking_uri, args.experiment, args.parent_run, args.out, not args.no_log, args.world)
    print(report.text)
    logged = f"; logged to run {report.parent_id} under report/" if not args.no_log else ""
    print(f"Report: {', '.join(p.name for p in report.files)} in {report.folder}{logged}")


def audit_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="culturealign-audit", description="Check the judge against human labels, as the paper did by hand."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a seeded random sample of a run's judged responses to label")
    export.add_argument("--run", required=True, help="run id of a cot or scenarios job")
    export.add_argument("--n", type=int, default=50, help="responses to sample (default: %(default)s, as the paper)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--out", type=Path, default=Path("audit.csv"))
    _tracking_option(export)
    score = commands.add_parser("score", help="judge accuracy and Cohen's kappa against the filled-in labels")
    score.add_argument("--run", required=True, help="the run the file was exported from")
    score.add_argument("file", type=Path, help="the exported CSV with its label column filled in")
    score.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    _tracking_option(score)
    return _run(parser, _audit, argv)


def _audit(args) -> None:
    from culturealign.report import audit
    from culturealign.report.runs import open_client

    client = open_client(args.tracking_uri)
    if args.command == "export":
        count = audit.export_sample(client, args.run, args.n, args.seed, args.out)
        print(f"Wrote {count} responses to {args.out} (blind: no judge verdicts) and the judge's verdicts to "
              f"{audit.judge_file(args.out)}: fill the `label` column (option number, 0 = unclassifiable), "
              f"then run culturealign-audit score --run {args.run} {args.out}")
    else:
        score = audit.score_audit(client, args.run, args.file, args.seed)
        print(score.summary() + f" (logged to run {args.run})")


def ui_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="culturealign-ui", description="The MLflow UI on culturealign's store.")
    _tracking_option(parser)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="whose latest sweep to link (default: %(default)s)")
    return _run(parser, _ui, argv)


def _ui(args) -> None:
    from culturealign.report.ui import serve

    serve(args.tracking_uri, args.port, args.experiment)
