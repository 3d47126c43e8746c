"""Cost accounting and dry runs: a dry run sends nothing and predicts exactly the requests a run sends."""

from pathlib import Path

import pytest

from culturealign import planning
from culturealign.app import record
from tests.fake_openai import FakeOpenAIServer, Policy
from tests.helpers import fake_model_overrides, make_cfg, run_cli, run_pipeline, spec_of

MODEL_KINDS = ("classification", "free")


def small_cfg(server, paper_csv, workdir, *extra):
    # concurrency=1: the fake server's answers (and so the judge's distinct pairs) are deterministic
    overrides = fake_model_overrides(server.base_url, paper_csv, workdir)
    return make_cfg(*overrides, "dataset.limit=3", "concurrency=1", "bootstrap.resamples=100", *extra)


def sent(server) -> dict[str, int]:
    kinds = server.stats.by_kind
    return {"model": sum(kinds[k] for k in MODEL_KINDS), "judge": kinds["judge"]}


def test_cost_is_tokens_times_list_prices():
    gpt_4o = spec_of(make_cfg("model=gpt-4o")).model
    assert gpt_4o.cost_usd(1_000_000, 1_000_000) == pytest.approx(2.50 + 10.00)
    assert spec_of(make_cfg("model=openai-compatible")).model.cost_usd(10**9, 10**9) == 0


@pytest.mark.parametrize("style", ["classification", "cot"])
def test_dry_run_sends_nothing_and_counts_what_the_run_then_sends(paper_csv, tmp_path, style):
    with FakeOpenAIServer(policy=Policy(seed=1, refusal_rate=0.0)) as server:
        for samples in (2, 3):  # the second round starts from a partly filled cache
            cfg = small_cfg(server, paper_csv, tmp_path, f"style={style}", f"samples={samples}", "model.n_per_request=2")
            server.stats.reset()
            plan = planning.plan_job(spec_of(cfg))
            assert server.stats.requests == 0
            run_pipeline(cfg)
            assert {role: r.requests for role, r in plan.roles.items()} == {
                role: n for role, n in sent(server).items() if role in plan.roles
            }
        assert planning.plan_job(spec_of(cfg)).requests == 0


def test_costs_logged_for_what_was_paid_and_what_the_answers_are_worth(paper_csv, tmp_path):
    prices = ["model.price_input_per_mtok=1000", "model.price_output_per_mtok=2000"]
    with FakeOpenAIServer() as server:
        cfg = small_cfg(server, paper_csv, tmp_path, "samples=4", *prices)
        first = record.result_metrics(run_pipeline(cfg))
        again_result = run_pipeline(cfg)
        again = record.result_metrics(again_result)
    prompt, completion = again_result.costs["model"].workload_tokens
    assert prompt > 0 and completion > 0
    expected = (prompt * 1000 + completion * 2000) / 1e6
    assert first["cost_usd"] == pytest.approx(expected) == pytest.approx(first["cost_usd_workload"])
    assert again["cost_usd"] == 0 and again["cost_usd_workload"] == pytest.approx(expected)


def test_dry_sweep_prints_each_job_and_a_total_without_mlflow(paper_csv, tmp_path):
    with FakeOpenAIServer() as server:
        args = [
            "--multirun",
            *fake_model_overrides(server.base_url, paper_csv, tmp_path),
            "style=classification,cot",
            "samples=3",
            "dataset.limit=2",
            "dry_run=true",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ]
        result = run_cli(args, cwd=tmp_path)
        assert server.stats.requests == 0
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "dry run:" in line]
    assert len(lines) == 3, result.stdout
    assert "6 requests (model 6)" in lines[0]  # 2 questions x 3 samples, one sample per request
    assert "12 requests (model 6, judge 6)" in lines[1]
    assert lines[2].startswith("sweep total (2 jobs): dry run: 18 requests (model 12, judge 6)")
    assert not Path(tmp_path / "mlruns").exists()
