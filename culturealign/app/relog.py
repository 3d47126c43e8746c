"""`culturealign-log JOB_FOLDER`: log a finished job whose tracking store failed (gone, read-only, a server
that went away mid-sweep) to MLflow later, from the files the job wrote into its output folder before it
talked to the store: the same run name, tags, params, config, dataset input, metrics, series, result
artifacts and answer table. The run the job had created (left RUNNING or FAILED) is marked KILLED; the new
run is tagged with the folder it came from. A folder is logged once: a second call refuses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from culturealign.errors import CultureAlignError, TrackingError
from culturealign.redaction import redact
from culturealign.spec import TrackingSpec
from culturealign.tracking import names
from culturealign.tracking.store import JobRun

PROGRAM = "culturealign-log"
RESULT_FILES = (names.SCORES_ARTIFACT, names.DISTRIBUTIONS_ARTIFACT, names.RESPONSES_ARTIFACT)


def read_folder(folder: Path) -> tuple[dict, dict[str, str], dict[str, list[float]], list[dict]]:
    """(the run's record, result files, metric series, answer table rows) of a finished job's folder."""
    pending = folder / names.PENDING_RUN_FILE
    if not pending.is_file():
        raise TrackingError(f"{folder} has no {names.PENDING_RUN_FILE}: not the output folder of a culturealign job")
    record = json.loads(pending.read_text(encoding="utf-8"))
    if record.get("logged_run_id"):
        raise TrackingError(f"{folder} is already logged as run {record['logged_run_id']} in {record['logged_to']}")
    missing = [name for name in (*RESULT_FILES, names.SERIES_FILE, names.RESPONSES_TABLE) if not (folder / name).is_file()]
    if missing:
        raise TrackingError(f"{folder} has no {missing[0]}: the job did not finish, there is nothing to log")
    files = {name: (folder / name).read_text(encoding="utf-8") for name in RESULT_FILES}
    series = json.loads((folder / names.SERIES_FILE).read_text(encoding="utf-8"))
    rows = json.loads((folder / names.RESPONSES_TABLE).read_text(encoding="utf-8"))
    return record, files, series, rows


def log_folder(folder: Path, tracking_uri: str | None = None) -> JobRun:
    """Create the job's run from its folder in `tracking_uri` (default: the store the job used)."""
    from culturealign.app import record as job_record

    data, files, series, rows = read_folder(folder)
    uri = tracking_uri or data["tracking_uri"]
    tracking = TrackingSpec(uri, data["experiment"])
    tags = {**data["tags"], names.LOGGED_FROM_TAG: str(folder.resolve())}
    try:
        run = JobRun(tracking, data["name"], data["key"], tags, data["params"], data["config"], parent=data.get("parent"))
    except CultureAlignError:
        raise
    except Exception as error:  # noqa: BLE001 - a store that opens but cannot be written
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise TrackingError(f"cannot create a run in MLflow at {uri} ({reason}); {folder} is unchanged") from None
    with run:
        try:
            if data.get("dataset"):
                run.log_dataset(**data["dataset"])
            job_record.upload(run, json.loads(files[names.SCORES_ARTIFACT]), series, files, rows)
        except Exception as error:  # noqa: BLE001 - the store failed again: one line, the folder is unchanged
            raise run.lost(error) from None
    job_record.save_pending(folder, logged_run_id=run.run_id, logged_to=uri)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the job's output folder (Hydra's, e.g. outputs/<date>/<time> or multirun/.../<n>)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the one the job used)")
    args = parser.parse_args(argv)
    try:
        run = log_folder(args.folder, args.tracking_uri)
    except CultureAlignError as error:
        print(f"{PROGRAM}: error: {redact(str(error))}", file=sys.stderr)
        return 1
    print(f"Logged {args.folder} to MLflow: {run.url_hint()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
