"""Sweeps through other Hydra launchers: submitit (the cluster path, run as local processes) and joblib."""

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from culturealign.app.schema import conf_dir
from tests.fake_openai import FakeOpenAIServer
from tests.jobs import small_sweep, tracking_client
from tests.sweep_runs import parent_and_children


def run_sweep(workdir, data, launcher_args: list[str], countries: str) -> tuple:
    with FakeOpenAIServer() as server:
        result = small_sweep(server.base_url, data, workdir, *launcher_args, f"country={countries}")
        requests = server.stats.requests
    assert result.returncode == 0, result.stderr[-3000:]
    return tracking_client(workdir), requests


def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


def test_slurm_launcher_config_sets_the_lab_knobs():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=4"]
    launcher = launcher_config(*overrides)
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.array_parallelism == 4
    assert {"timeout_min", "cpus_per_task", "mem_gb", "account", "setup", "qos"} <= set(launcher)
    built = instantiate(launcher)  # what Hydra does before submitting; fails on a key the plugin lacks
    assert built.params["partition"] == "gpu" and built.params["timeout_min"] == launcher.timeout_min


def test_local_launcher_config_extends_submitit_local():
    launcher = launcher_config("hydra/launcher=local")
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert launcher.timeout_min > 0 and launcher.submitit_folder.endswith(".submitit/%j")


def test_submitit_sweep_files_every_job_under_one_parent(tmp_path, paper_csv):
    client, requests = run_sweep(tmp_path, paper_csv, ["hydra/launcher=local"], "us,japan")
    parent, children = parent_and_children(client)
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.params["country"] for r in children) == ["japan", "us"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["n_responses"] == 6 for r in children)
    assert requests == 2 * 2 * 3
    logs = list((tmp_path / "multirun" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and all("Wasserstein similarity" in log.read_text() for log in logs)


def test_joblib_sweep_loses_no_run(tmp_path, paper_csv):
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    client, requests = run_sweep(tmp_path, paper_csv, launcher, "us,china,japan,india")
    parent, children = parent_and_children(client)
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.params["country"] for r in children) == ["china", "india", "japan", "us"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["n_responses"] == 6 for r in children)
    assert requests == 4 * 2 * 3
