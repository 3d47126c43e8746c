"""Bad input: each case fails with one line that says what to fix, before any request reaches the model.

In-process cases call the same job function as the CLI; one parametrised test runs a few through the
installed CLI to check the exit code, the single error line and the absence of a traceback."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from culturealign.app.schema import one_line
from culturealign.errors import ConfigError, DatasetError, ModelError, TrackingError
from tests.fake_openai import FakeOpenAIServer
from tests.helpers import make_cfg, run_cli
from tests.jobs import job_cfg, run_in_process, small_sweep, tracking_client
from tests.sweep_runs import parent_and_children

HEADER = "question,selections,options,source\n"
US_JAPAN = "defaultdict(<class 'list'>, {'United States': [0.6, 0.4], 'Japan': [0.3, 0.7]})"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def csv_row(question: str, selections: str, options: str = "['Yes', 'No']") -> str:
    quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
    return ",".join([quote(question), quote(selections), quote(options), "GAS"]) + "\n"


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_input")


def fails_before_any_request(server, cfg, error: type, pattern: str) -> None:
    server.stats.reset()
    with pytest.raises(error, match=pattern) as raised:
        run_in_process(cfg)
    message = str(raised.value)
    assert "\n" not in message, "the error must be one line"
    assert server.stats.http_requests == 0, "validation must happen before any request"


CONFIG_CASES = {  # well-typed values out of range or inconsistent: one ConfigError from the spec
    "temperature_above_2": (["model.temperature=2.5"], r"model\.temperature must be a number in \[0, 2\], got 2\.5"),
    "temperature_negative": (["model.temperature=-0.1"], r"model\.temperature must be a number in \[0, 2\]"),
    "top_p_zero": (["model.top_p=0"], r"model\.top_p must be a number in \(0, 1\], got 0"),
    "top_p_above_1": (["model.top_p=1.5"], r"model\.top_p must be a number in \(0, 1\]"),
    "samples_zero": (["samples=0"], r"samples must be a positive integer <= 10000, got 0"),
    "samples_negative": (["samples=-3"], r"samples must be a positive integer <= 10000, got -3"),
    "samples_huge": (["samples=1000000000"], r"samples must be a positive integer <= 10000, got 1000000000"),
    "concurrency_zero": (["concurrency=0"], r"concurrency must be a positive integer <= 1024, got 0"),
    "seed_negative": (["seed=-1"], r"seed must be an integer in \[0, 2147483647\], got -1"),
    "bootstrap_confidence_out_of_range": (["bootstrap.confidence=1.5"], r"bootstrap\.confidence must be in \(0, 1\)"),
    "bootstrap_too_few_resamples": (["bootstrap.resamples=5"], r"bootstrap\.resamples must be an integer in \[10, 100000\]"),
    "bootstrap_too_many_resamples": (["bootstrap.resamples=10000000"], r"bootstrap\.resamples must be an integer in"),
    "two_stage_percentile": (["bootstrap.method=percentile"], r"bootstrap\.kind=questions_and_answers takes bootstrap\.method=basic"),
    "two_stage_bca": (["bootstrap.method=bca"], r"for the paper's interval over questions alone set bootstrap\.kind=questions"),
    "n_per_request_zero": (["model.n_per_request=0"], r"model\.n_per_request must be an integer in \[1, 128\], got 0"),
    "dataset_limit_zero": (["dataset.limit=0"], r"dataset\.limit must be null or > 0, got 0"),
    "dataset_no_countries": (["dataset.countries=[]"], r"dataset\.countries must list at least one country"),
    "dataset_one_option": (["dataset.n_options=1"], r"dataset\.n_options must be an integer in \[2, 100\], got 1"),
    "logprobs_with_cot": (["estimator=logprobs", "style=cot"], r"estimator=logprobs works only with style=class"),
    "max_tokens_zero": (["model.max_tokens=0"], r"model\.max_tokens must be null or an integer in \[1, 32768\]"),
    "timeout_zero": (["model.timeout=0"], r"model\.timeout must be a number of seconds > 0"),
    "max_retries_negative": (["model.max_retries=-1"], r"model\.max_retries must be an integer in \[0, 100\]"),
    "retry_backoff_negative": (["model.retry_backoff=-1"], r"model\.retry_backoff must be a number of seconds in"),
    "base_url_not_http": (["model.base_url=ftp://example.org/v1"], r"model\.base_url must be an http\(s\) URL"),
    "password_in_base_url": (["model.base_url=http://user:pw@127.0.0.1/v1"], r"model\.base_url carries a password"),
    "key_instead_of_env_name": (["model.api_key_env=sk-live-123"], r"model\.api_key_env must be the NAME of an env"),
    "key_in_config": (["+model.api_key=sk-live-123"], r"model\.api_key: do not put secrets in the config"),
    "token_in_judge": (["+judge.auth_token=abc"], r"judge\.auth_token: do not put secrets in the config"),
    "judge_temperature_out_of_range": (["style=cot", "judge.temperature=5"], r"judge\.temperature must be a number"),
    "template_without_question": (
        ["style=scenarios", "scenarios.templates=[What do you think?]"],
        r"scenario template 1 has no \{question\} placeholder",
    ),
    "no_templates": (["style=scenarios", "scenarios.templates=[]"], r"scenarios\.templates is empty"),
    "unknown_country_in_dataset_countries": (["dataset.countries=[us,atlantis]"], r"unknown country .atlantis.; known"),
}

COMPOSITION_CASES = {  # values of the wrong type: Hydra refuses to compose the config at all
    "temperature_not_a_number": ("model.temperature=hot", r"model\.temperature: Value 'hot' .* could not be converted to Float"),
    "samples_not_a_number": ("samples=many", r"samples: Value 'many' .* could not be converted to Integer"),
    "samples_a_bool": ("samples=true", r"samples: Value 'True' of type 'bool' could not be converted to Integer"),
    "samples_a_fraction": ("samples=1.5", r"samples: Value '1.5' of type 'float' could not be converted to Integer"),
    "limit_a_bool": ("dataset.limit=true", r"dataset\.limit: Value 'True' of type 'bool' could not be converted"),
    "cache_enabled_maybe": ("cache.enabled=maybe", r"cache\.enabled: Value 'maybe' is not a valid bool"),
    "model_name_null": ("model.name=null", r"model\.name: field 'model\.name' is not Optional"),
    "seed_not_a_number": ("seed=abc", r"seed: Value 'abc' of type 'str' could not be converted to Integer"),
    "unknown_estimator": ("estimator=bayes", r"estimator: Invalid value 'bayes', expected one of \[sample, logprobs\]"),
    "unknown_provider": ("model.provider=anthropic", r"model\.provider: Invalid value 'anthropic', expected one of"),
    "unknown_bootstrap_method": ("bootstrap.method=jackknife", r"bootstrap\.method: Invalid value 'jackknife'"),
    "unknown_bootstrap_kind": ("bootstrap.kind=answers", r"bootstrap\.kind: Invalid value 'answers', expected one of \[questions, q"),
    "unknown_classification_rule": ("extraction.classification=loose", r"extraction\.classification: Invalid value"),
    "unknown_model_key": ("model.temprature=0.5", r"model\.temprature: Key 'temprature' not in 'ModelSpec'"),
}


@pytest.mark.parametrize("override, pattern", COMPOSITION_CASES.values(), ids=COMPOSITION_CASES.keys())
def test_wrongly_typed_value_is_a_one_line_composition_error(server, workdir, paper_csv, override, pattern):
    with pytest.raises(ConfigCompositionException) as raised:
        job_cfg(server.base_url, paper_csv, workdir, override)
    message = one_line(raised.value)
    assert re.search(pattern, message), message
    assert "\n" not in message and "sk-live" not in message


@pytest.mark.parametrize("overrides, pattern", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_bad_config_value(server, workdir, paper_csv, overrides, pattern):
    fails_before_any_request(server, job_cfg(server.base_url, paper_csv, workdir, *overrides), ConfigError, pattern)


def test_missing_api_key_env_var(server, workdir, paper_csv, monkeypatch):
    monkeypatch.delenv("CULTUREALIGN_TEST_UNSET_KEY", raising=False)
    cfg = job_cfg(server.base_url, paper_csv, workdir, "model.api_key_env=CULTUREALIGN_TEST_UNSET_KEY")
    pattern = r"environment variable CULTUREALIGN_TEST_UNSET_KEY is not set; export it"
    fails_before_any_request(server, cfg, ConfigError, pattern)


def test_unreachable_base_url(server, workdir, paper_csv):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = job_cfg(server.base_url, paper_csv, workdir, f"model.base_url={url}")
    pattern = rf"model\.base_url {url} is unreachable: cannot connect .*; start the server or fix model\.base_url"
    fails_before_any_request(server, cfg, ModelError, pattern)


def test_unreachable_judge_base_url(server, workdir, paper_csv):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = job_cfg(server.base_url, paper_csv, workdir, "style=cot", f"judge.base_url={url}")
    fails_before_any_request(server, cfg, ModelError, rf"judge\.base_url {url} is unreachable")


def test_dataset_path_does_not_exist(server, workdir, tmp_path):
    cfg = job_cfg(server.base_url, tmp_path / "nope.csv", workdir)
    fails_before_any_request(server, cfg, DatasetError, r"nope\.csv does not exist; set dataset\.path")


def test_file_with_wrong_columns(server, workdir, tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("id,text,label\n1,hello,2\n")
    fails_before_any_request(
        server, job_cfg(server.base_url, path, workdir), DatasetError,
        r"is not GlobalOpinionQA: missing column\(s\) question, selections, options, source",
    )  # fmt: skip


BAD_ROWS = {
    "selections_not_a_mapping": (csv_row("Q?", "{'United States': [0.6"), r"row 1: 'selections' is not a country"),
    "options_not_a_list": (csv_row("Q?", US_JAPAN, "Yes or No"), r"row 1: 'options' is not a Python list literal"),
    "share_count_mismatch": (csv_row("Q?", "{'United States': [1.0]}"), r"has 1 shares for 2 options; fix or drop"),
    "non_numeric_share": (csv_row("Q?", "{'United States': ['a', 'b']}"), r"non-numeric share; fix or drop"),
    "negative_share": (csv_row("Q?", "{'United States': [1.5, -0.5]}"), r"negative share; fix or drop"),
}


@pytest.mark.parametrize("row, pattern", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_dataset_row(server, workdir, tmp_path, row, pattern):
    path = tmp_path / "goqa.csv"
    path.write_text(HEADER + row)
    fails_before_any_request(server, job_cfg(server.base_url, path, workdir), DatasetError, pattern)


def test_country_absent_from_selected_questions(server, workdir, tmp_path):
    path = tmp_path / "goqa.csv"
    path.write_text(HEADER + csv_row("Q?", US_JAPAN))
    cfg = job_cfg(server.base_url, path, workdir, "dataset.countries=[us,japan]", "country=india")
    pattern = r"has no human data for India .*; add India to dataset\.countries"
    fails_before_any_request(server, cfg, DatasetError, pattern)


def test_no_question_matches_the_selection(server, workdir, tmp_path):
    path = tmp_path / "goqa.csv"
    path.write_text(HEADER + csv_row("Q?", US_JAPAN))
    cfg = job_cfg(server.base_url, path, workdir, "dataset.countries=[us,china]")
    fails_before_any_request(server, cfg, DatasetError, r"no question in .* has 2 options and human data for us, china")


def test_corrupt_cache_file(server, workdir, paper_csv, tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"this is not a database" * 100)
    cfg = job_cfg(server.base_url, paper_csv, workdir, f"cache.url={cache}")
    fails_before_any_request(server, cfg, ConfigError, r"cannot open the response cache .*; delete the file or set")


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "nosuchscheme://store"], ids=["server_down", "bad_scheme"])
def test_mlflow_uri_that_cannot_be_opened(server, workdir, paper_csv, uri):
    uri = uri.format(port=closed_port())
    cfg = job_cfg(server.base_url, paper_csv, workdir, f"mlflow.tracking_uri={uri}")
    fails_before_any_request(server, cfg, TrackingError, r"MLflow .*; (start it|check mlflow\.tracking_uri)")


HYDRA_CASES = {
    "unknown_country": ("country=atlantis", MissingConfigException, r"Could not find 'country/atlantis'"),
    "unknown_style": ("style=haiku", MissingConfigException, r"Could not find 'style/haiku'"),
    "unknown_model": ("model=gpt-5", MissingConfigException, r"Could not find 'model/gpt-5'"),
    "unknown_scenario_set": ("scenarios=poems", MissingConfigException, r"Could not find 'scenarios/poems'"),
    "misspelt_key": ("sample=5", ConfigCompositionException, r"Could not override 'sample'"),
    "misspelt_experiment": ("experiment=tabel1", MissingConfigException, r"Could not find 'experiment/tabel1'"),
}


@pytest.mark.parametrize("override, error, pattern", HYDRA_CASES.values(), ids=HYDRA_CASES.keys())
def test_unknown_choice_is_reported_by_hydra(override, error, pattern):
    with pytest.raises(error, match=pattern):
        make_cfg(override)


CLI_CASES = {
    "temperature": (["model.temperature=3"], "culturealign: error: model.temperature must be a number in [0, 2], got 3.0"),
    "wrong_type": (["samples=true"], "culturealign: error: samples: Value 'True' of type 'bool' could not be converted"),
    "misspelt_experiment": (["experiment=tabel1"], "Could not find 'experiment/tabel1'; available: table1"),
    "missing_dataset": (["dataset.path=/nonexistent/goqa.csv"], "/nonexistent/goqa.csv does not exist"),
    "key_instead_of_env_name": (["model.api_key_env=sk-live-123"], "must be the NAME of an environment variable"),
    "unknown_country": (["country=atlantis"], "Could not find 'country/atlantis'"),
}


@pytest.mark.parametrize("overrides, expected", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_prints_one_line_and_exits_non_zero(server, tmp_path, paper_csv, overrides, expected):
    server.stats.reset()
    base = ["model=openai-compatible", f"model.base_url={server.base_url}", f"dataset.path={paper_csv}"]
    base += [f"cache.url={tmp_path / 'cache.sqlite'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    result = run_cli([*base, *overrides], cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert expected in result.stderr, result.stderr
    assert server.stats.http_requests == 0


def test_full_error_shows_the_traceback_when_asked(tmp_path):
    command = [str(Path(sys.executable).with_name("culturealign")), "model.temperature=3"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "model.temperature" in result.stderr


def test_bad_value_in_a_sweep_fails_its_job_and_marks_the_sweep_failed(server, tmp_path, paper_csv):
    server.stats.reset()
    result = small_sweep(server.base_url, paper_csv, tmp_path, "model.temperature=5,0.7")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "culturealign: error: model.temperature must be a number in [0, 2], got 5.0" in result.stderr.splitlines()
    parent, [child] = parent_and_children(tracking_client(tmp_path))  # the bad job never reached MLflow
    assert parent.info.status == "FAILED"
    assert child.info.status == "FINISHED" and child.data.params["model.temperature"] == "0.7"
    assert server.stats.requests == 6  # only the good job's
