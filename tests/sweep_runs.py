"""Reading a sweep back from MLflow: its one parent run and the child runs filed under it."""

from __future__ import annotations

import json
from pathlib import Path


def parent_and_children(client, experiment_name: str = "culturealign"):
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("culturealign.kind") == "sweep"]
    assert len(parents) == 1, f"expected one sweep parent run, found {len(parents)}"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1, "a run is not filed under the sweep's parent"
    return parents[0], children


def responses(client, run_id: str, folder: Path) -> list[dict]:
    local = client.download_artifacts(run_id, "responses.jsonl", str(folder))
    return [json.loads(line) for line in Path(local).read_text(encoding="utf-8").splitlines()]
