"""The whole pipeline on the real embedded model (SmolLM2-135M via llama.cpp), offline, no API key."""

import socket
import subprocess
import sys
import time

import mlflow
import pytest

from culturealign.metrics import wasserstein_similarity
from culturealign.models.llamacpp import smollm2_path
from tests.helpers import make_cfg, run_cli, run_pipeline, spec_of


def local_cfg(paper_csv, style, *extra):
    return make_cfg(
        f"style={style}",
        "judge=smollm2-135m",
        f"dataset.path={paper_csv}",
        "dataset.limit=2",
        "samples=4",
        "cache.enabled=false",
        *extra,
    )


@pytest.mark.parametrize("style", ["classification", "cot", "scenarios"])
def test_scores_are_computed_from_the_models_real_outputs(paper_csv, style):
    extra = [] if style == "classification" else ["model.max_tokens=24"]
    result = run_pipeline(local_cfg(paper_csv, style, *extra))
    records, scores = result.records, result.scores
    assert len(records) == 8 and all(r.response is not None for r in records)
    if style != "classification":
        assert all(r.judge_output is not None for r in records)
    for score in scores.questions:
        options = [r.option for r in records if r.question_id == score.question.id]
        assert score.counts == [float(options.count(k)) for k in (1, 2)]
        assert score.unclassifiable == options.count(None)
        if sum(score.counts):
            assert score.similarity == pytest.approx(wasserstein_similarity(score.human, score.counts))
        else:
            assert score.similarity is None
    if style == "classification":  # an answer cut by max_tokens is never a bare option number
        assert all(r.option is None for r in records if r.finish_reason == "length")
    unclassifiable = sum(r.option is None for r in records) / len(records)
    assert scores.unclassifiable_rate == pytest.approx(unclassifiable)


def test_same_seed_gives_the_same_answers(paper_csv):
    first = run_pipeline(local_cfg(paper_csv, "classification", "seed=5")).records
    second = run_pipeline(local_cfg(paper_csv, "classification", "seed=5")).records
    other = run_pipeline(local_cfg(paper_csv, "classification", "seed=6")).records
    assert [r.response for r in first] == [r.response for r in second]
    assert [r.response for r in first] != [r.response for r in other]


def test_main_job_runs_offline_without_api_key(tmp_path, paper_csv):
    env = {"CULTUREALIGN_DATASET": str(paper_csv), "OPENAI_API_KEY": ""}
    db = tmp_path / "mlruns" / "mlflow.db"
    # the leading-number rule: under the strict one SmolLM2 rarely answers a bare number, and a job in which
    # nothing is classifiable fails by design (exit 3)
    overrides = ["dataset.limit=2", "samples=3", "extraction.classification=leading", f"mlflow.tracking_uri=sqlite:///{db}"]
    result = run_cli(overrides, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "smollm2-135m / us / classification" in result.stdout
    [run] = mlflow.MlflowClient(f"sqlite:///{db}").search_runs(["1"])
    assert run.info.status == "FINISHED" and run.data.params["model"] == "smollm2-135m"
    assert run.data.metrics["n_responses"] == 6


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("llama_server") / "server.log").open("w")
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # a pipe would fill and block it
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.time() < deadline, open(log.name).read()[-2000:]
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/v1"
    server.terminate()
    server.wait(timeout=10)
    log.close()


def test_mini_sweep_through_the_llama_cpp_server(tmp_path, paper_csv, llama_server):
    """The real HTTP path: the OpenAI provider against `python -m llama_cpp.server`."""
    db = tmp_path / "mlruns" / "mlflow.db"
    args = [
        "--multirun",
        "model=openai-compatible", f"model.base_url={llama_server}", "model.name=smollm2",
        "judge=openai-compatible", "judge.name=smollm2",
        "style=classification,cot", "country=japan",
        f"dataset.path={paper_csv}", "dataset.limit=2", "samples=2", "model.max_tokens=24", "extraction.classification=leading",
        "concurrency=2", f"cache.url={tmp_path / 'cache.sqlite'}",
        f"mlflow.tracking_uri=sqlite:///{db}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    result = run_cli(args, cwd=tmp_path)
    runs = mlflow.MlflowClient(f"sqlite:///{db}").search_runs(["1"])
    children = {r.data.params["style"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert children["classification"].info.status == "FINISHED", result.stderr[-2000:]
    # SmolLM2 is too small a judge to read its own chains of thought reliably: a CoT job in which no
    # answer could be classified is reported as such (exit 3, run FAILED), never as a number
    cot = children["cot"]
    measured = cot.info.status == "FINISHED"
    assert result.returncode == (0 if measured else 3), result.stderr[-2000:]
    assert measured or "nothing measured" in cot.data.tags["culturealign.error"]
    assert all(r.data.metrics["n_responses"] == 4 and r.data.metrics["completion_tokens"] > 0 for r in children.values())


def test_leading_rule_reads_the_same_answers_more_leniently(paper_csv):
    from culturealign.app.record import job_params
    from culturealign.extraction import parse_option_number
    from culturealign.spec import ClassificationRule

    extra = ("dataset.limit=4", "samples=10", "seed=2")
    strict = run_pipeline(local_cfg(paper_csv, "classification", *extra))
    leading_cfg = local_cfg(paper_csv, "classification", *extra, "extraction.classification=leading")
    leading = run_pipeline(leading_cfg)
    assert [r.response for r in strict.records] == [r.response for r in leading.records]
    for record in leading.records:
        truncated = record.finish_reason == "length"
        assert record.option == parse_option_number(record.response, 2, truncated, ClassificationRule.leading)
    assert leading.scores.unclassifiable_rate <= strict.scores.unclassifiable_rate
    assert job_params(spec_of(leading_cfg))["extraction.classification"] == "leading"
