"""The Python API: a job from Python, from inside a running event loop (as in Jupyter) and from a loop
running in a thread; tracked as the CLI tracks it; a sweep back as a DataFrame."""

import asyncio
import subprocess
import sys
import threading

import pandas as pd
import pytest

from culturealign import evaluate, evaluate_async, load_sweep
from culturealign.errors import ConfigError
from tests.conftest import MINI_SWEEP_COUNTRIES, MINI_SWEEP_QUESTIONS
from tests.fake_openai import FakeOpenAIServer
from tests.helpers import REPO, fake_model_overrides
from tests.jobs import only_run


def overrides(server, paper_csv, workdir, *extra):
    fast = ["model.retry_backoff=0.01", "dataset.limit=2", "samples=4", "bootstrap.resamples=100"]
    return [*fake_model_overrides(server.base_url, paper_csv, workdir), *fast, *extra]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


def check(result, style="classification"):
    assert result.spec.choices["style"] == style and result.label == f"openai-compatible / us / {style}"
    assert isinstance(result.questions, pd.DataFrame) and len(result.questions) == 2
    assert {"id", "question", "human_distribution", "model_distribution", "similarity"} <= set(result.questions)
    scored = result.questions["similarity"].dropna()
    assert result.similarity.value == pytest.approx(scored.mean())
    assert result.similarity.low <= result.similarity.value <= result.similarity.high
    assert result.result.scores.n_responses == 2 * 4
    assert len(result.spec.dataset.sha256) == 64 and result.spec.dataset.revision is None  # dataset.path


def test_evaluate_from_plain_python(server, paper_csv, tmp_path):
    result = evaluate(*overrides(server, paper_csv, tmp_path))
    check(result)
    assert result.run_id is None and not (tmp_path / "mlruns").exists()  # track=False: nothing in MLflow


def test_evaluate_inside_a_running_event_loop(server, paper_csv, tmp_path):
    """As in a notebook cell: the sync call works although a loop is running, and so does await."""

    async def notebook_cell():
        asyncio.get_running_loop()  # the situation in which asyncio.run() refuses to start
        in_loop = evaluate(*overrides(server, paper_csv, tmp_path))
        awaited = await evaluate_async(*overrides(server, paper_csv, tmp_path, "style=cot"))
        return in_loop, awaited

    in_loop, awaited = asyncio.run(notebook_cell())
    check(in_loop)
    check(awaited, "cot")
    again = evaluate(*overrides(server, paper_csv, tmp_path))  # the same job, answers from the cache
    assert again.similarity == in_loop.similarity


def test_evaluate_on_a_loop_running_in_another_thread(server, paper_csv, tmp_path):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def on_that_loop():
        return evaluate(*overrides(server, paper_csv, tmp_path)), await evaluate_async(*overrides(server, paper_csv, tmp_path))

    try:
        sync_result, async_result = asyncio.run_coroutine_threadsafe(on_that_loop(), loop).result(timeout=120)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    check(sync_result)
    check(async_result)


def test_evaluate_tracked_like_the_cli(server, paper_csv, tmp_path):
    result = evaluate(*overrides(server, paper_csv, tmp_path), track=True)
    client, run = only_run(tmp_path)
    assert result.run_id == run.info.run_id and run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["bootstrap.kind"] == "questions_and_answers" and params["style"] == "classification"
    assert params["dataset.sha256"] == result.spec.dataset.sha256
    assert metrics["wasserstein_similarity"] == pytest.approx(result.similarity.value)


def test_bad_overrides_fail_as_on_the_command_line(server, paper_csv, tmp_path):
    with pytest.raises(ConfigError, match=r"samples must be a positive integer"):
        evaluate(*overrides(server, paper_csv, tmp_path, "samples=0"))


def test_load_sweep_one_row_per_run_and_per_question(mini_sweep):
    runs = load_sweep(tracking_uri=mini_sweep.uri)
    assert len(runs) == len(MINI_SWEEP_COUNTRIES) * 3
    assert set(runs["country"]) == set(MINI_SWEEP_COUNTRIES) and set(runs["style"]) == {"classification", "cot", "scenarios"}
    assert {"run_id", "wasserstein_similarity", "wasserstein_similarity_ci_low", "bootstrap.kind", "dataset.sha256"} <= set(runs)
    assert runs["run_id"].is_unique and runs.attrs["skipped"] == []
    [parent] = mini_sweep.client.search_runs(
        [mini_sweep.client.get_experiment_by_name("culturealign").experiment_id], "tags.`culturealign.kind` = 'sweep'"
    )
    assert runs.attrs["parent_run"] == parent.info.run_id
    questions = load_sweep(parent.info.run_id, tracking_uri=mini_sweep.uri, per_question=True)
    assert len(questions) == len(runs) * MINI_SWEEP_QUESTIONS
    by_run = questions.groupby("run_id")["similarity"].mean()
    for _, run in runs.iterrows():
        assert by_run[run["run_id"]] == pytest.approx(run["wasserstein_similarity"])


def test_import_culturealign_stays_light():
    code = (
        "import sys, culturealign; heavy = {'culturealign.api', 'hydra', 'pandas', 'mlflow', 'numpy'} & set(sys.modules);"
        "assert not heavy, heavy; from culturealign import evaluate, load_sweep; assert 'culturealign.api' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
