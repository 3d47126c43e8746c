"""A real --multirun through the installed CLI against the fake OpenAI-compatible server, checked in MLflow."""

import json
import shlex
import subprocess

import mlflow
import pandas as pd
import pytest
import yaml

import culturealign
from tests.conftest import MINI_SWEEP_QUESTIONS as QUESTIONS, MINI_SWEEP_SAMPLES as SAMPLES, REPO

METRICS = [
    "wasserstein_similarity",
    "wasserstein_similarity_ci_low",
    "wasserstein_similarity_ci_high",
    "unclassifiable_rate",
    "n_questions",
    "n_responses",
    "prompt_tokens",
    "completion_tokens",
]


@pytest.fixture(scope="module")
def sweep(mini_sweep):
    return mini_sweep.workdir, mini_sweep.result, mini_sweep.client, mini_sweep.requests


def test_sweep_has_one_parent_and_six_children(sweep):
    _, _, client, _ = sweep
    experiment = client.get_experiment_by_name("culturealign")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("culturealign.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 6 == len(runs) - 1
    combos = {(r.data.params["country"], r.data.params["style"]) for r in children}
    assert combos == {(c, s) for c in ("us", "india") for s in ("classification", "cot", "scenarios")}


def test_every_child_has_metrics_params_and_artifacts(sweep, tmp_path):
    workdir, result, client, requests = sweep
    children = [r for r in client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    for run in children:
        metrics, params = run.data.metrics, run.data.params
        assert run.info.status == "FINISHED"
        assert set(METRICS) <= set(metrics)
        assert metrics["wasserstein_similarity_ci_low"] <= metrics["wasserstein_similarity"]
        assert metrics["wasserstein_similarity"] <= metrics["wasserstein_similarity_ci_high"]
        assert 0 <= metrics["unclassifiable_rate"] <= 1
        assert metrics["n_questions"] == QUESTIONS and metrics["n_responses"] == QUESTIONS * SAMPLES
        assert params["model.temperature"] == "0.7" and params["model.top_p"] == "1.0"
        assert params["samples"] == str(SAMPLES) and params["model"] == "openai-compatible"
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
        distributions = json.load(open(f"{local}/distributions.json"))
        assert len(distributions) == QUESTIONS
        assert {"id", "question", "options", "human_distribution", "model_counts", "similarity"} <= set(distributions[0])
        responses = [json.loads(line) for line in open(f"{local}/responses.jsonl")]
        assert len(responses) == QUESTIONS * SAMPLES
        assert {"prompt", "response", "judge_output", "option"} <= set(responses[0])
        if params["style"] != "classification":
            assert all(r["judge_output"] for r in responses)
        # The metric is what the artifact says: mean over scored questions.
        scored = [d["similarity"] for d in distributions if d["similarity"] is not None]
        assert metrics["wasserstein_similarity"] == pytest.approx(sum(scored) / len(scored))
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # one model request per sample; the judge once per distinct (question, response) of the 4 free-text jobs
    model_requests = 6 * QUESTIONS * SAMPLES
    assert model_requests < requests <= model_requests + 4 * QUESTIONS * SAMPLES


def test_summary_printed_for_each_job(sweep):
    _, result, _, _ = sweep
    assert result.stdout.count("Wasserstein similarity") == 6
    assert result.stdout.count("MLflow: experiment") == 6


def children_by_cell(client):
    runs = client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("culturealign.kind") == "sweep")
    return parent, {(r.data.params["country"], r.data.params["style"]): r for r in runs if r is not parent}


def test_runs_are_named_and_carry_their_source_and_command(mini_sweep):
    parent, children = children_by_cell(mini_sweep.client)
    labels = {"us": "US", "india": "India", "classification": "Classification", "cot": "CoT", "scenarios": "Scenarios"}
    for (country, style), run in children.items():
        assert run.info.run_name == f"default {labels[country]}/{labels[style]}"  # model.name, then the cell
    assert parent.info.run_name.startswith("default: country x style (6 jobs) ")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for run in [parent, *children.values()]:
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "culturealign" and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.source.git.dirty"] in ("true", "false")
        assert tags["culturealign.version"] == culturealign.__version__
    assert parent.data.tags["culturealign.command"] == shlex.join(["culturealign", *mini_sweep.args])
    us_cot = children[("us", "cot")].data.tags["culturealign.command"]
    # the command that reruns this one job: plain values, no Hydra escapes
    assert us_cot.startswith("culturealign country=us style=cot experiment=table1 ") and "--multirun" not in us_cot
    assert "\\" not in us_cot and "model.base_url=http://127.0.0.1:" in us_cot


def test_the_question_set_is_a_dataset_input(mini_sweep, paper_csv):
    from culturealign.app.record import question_digest
    from culturealign.app.schema import load_country
    from culturealign.dataset import read_questions, select_questions

    countries = [load_country(name) for name in ("us", "china", "japan", "india")]
    digest = question_digest(select_questions(read_questions(paper_csv), countries, limit=QUESTIONS))
    _, children = children_by_cell(mini_sweep.client)
    for run in children.values():
        [dataset_input] = run.inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert (dataset.name, dataset.digest, dataset.source_type) == ("globalopinionqa", digest, "local")
        assert json.loads(dataset.source) == {"uri": str(paper_csv.resolve())}
        assert json.loads(dataset.profile)["questions"] == QUESTIONS
        assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "eval")]


def test_answers_are_a_browsable_table_and_results_stay_in_the_job_folder(mini_sweep, tmp_path):
    client = mini_sweep.client
    _, children = children_by_cell(client)
    run = children[("india", "scenarios")]
    assert {"path": "responses_table.json", "type": "table"} in json.loads(run.data.tags["mlflow.loggedArtifacts"])
    # MLflow's table format (pandas "split" JSON); client.load_table would search the default store, not this one
    table = pd.read_json(client.download_artifacts(run.info.run_id, "responses_table.json", str(tmp_path)), orient="split", dtype=False)
    responses = [json.loads(line) for line in open(client.download_artifacts(run.info.run_id, "responses.jsonl", str(tmp_path)))]
    assert len(table) == len(responses) == QUESTIONS * SAMPLES
    assert list(table["response"]) == [r["response"] for r in responses]
    assert list(table["judge_output"]) == [r["judge_output"] for r in responses]
    assert {"question", "option_text", "variant", "sample_index"} <= set(table.columns)
    # Every job's own output folder (Hydra's) keeps its results too.
    sweep_dir = mini_sweep.workdir / "multirun"
    for folder in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        scores = json.loads((folder / "scores.json").read_text())
        overrides = dict(line.split("=", 1) for line in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()))
        job = children[(overrides["country"], overrides["style"])]
        assert scores == pytest.approx({name: job.data.metrics[name] for name in scores})
        assert set(scores) >= {"wasserstein_similarity", "wasserstein_similarity_ci_low", "unclassifiable_rate"}
        assert len(json.loads((folder / "distributions.json").read_text())) == QUESTIONS
        assert len((folder / "responses.jsonl").read_text().splitlines()) == QUESTIONS * SAMPLES


def test_no_empty_default_experiment(mini_sweep):
    client = mini_sweep.client
    assert [e.name for e in client.search_experiments()] == ["culturealign"]
    default = client.get_experiment_by_name("Default")
    assert default.lifecycle_stage == "deleted" and not client.search_runs([default.experiment_id], run_view_type=3)
    experiment = client.get_experiment_by_name("culturealign")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_terminal_shows_swept_values_sweep_progress_and_no_library_noise(mini_sweep):
    out, err = mini_sweep.result.stdout, mini_sweep.result.stderr
    echoes = [line.split("] ", 1)[1] for line in out.splitlines() if "] job " in line and " of 6: " in line]
    assert echoes[0] == "job 1 of 6: country=us style=classification"
    assert echoes[-1] == "job 6 of 6: country=india style=scenarios"
    assert "#0 : " not in out and "\\:" not in out  # not Hydra's whole escaped override list
    progress = [line for line in out.splitlines() if "answers (" in line]
    assert all("; job " in line and " of 6, sweep ETA " in line for line in progress), progress[:2]
    assert "; job 6 of 6, sweep ETA " in progress[-1]
    for noise in ("Matplotlib is building the font cache", "Creating initial MLflow database tables", "Warning"):
        assert noise not in out + err
    assert err.strip() == "", err[-2000:]


def test_a_temperature_sweep_names_each_run_by_its_temperature(tmp_path, paper_csv):
    from tests.fake_openai import FakeOpenAIServer
    from tests.jobs import small_sweep, tracking_client

    with FakeOpenAIServer() as server:
        result = small_sweep(server.base_url, paper_csv, tmp_path, "model.temperature=0.3,0.7")
    assert result.returncode == 0, result.stderr[-2000:]
    client = tracking_client(tmp_path)
    names = sorted(r.info.run_name for r in client.search_runs([client.get_experiment_by_name("culturealign").experiment_id]))
    assert names[:2] == ["default US/Classification model.temperature=0.3", "default US/Classification model.temperature=0.7"]
    assert names[2].startswith("default: model.temperature (2 jobs) ")
