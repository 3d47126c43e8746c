"""cache.url: the forms it accepts and the one-line errors for what it must refuse (no database server needed).

Refused stores are left exactly as they were."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from culturealign.errors import ConfigError
from culturealign.models.base import Completion
from culturealign.models.cache import ResponseCache
from culturealign.spec import CacheSpec
from tests.fake_openai import FakeOpenAIServer
from tests.helpers import fake_model_overrides, make_cfg, run_cli

SECRET = "s3cret-Pw-4e1b9d"


def snapshot(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_path_and_a_sqlite_url_open_the_same_file_in_the_same_format(tmp_path):
    path = tmp_path / "cache.sqlite"
    ResponseCache(path).put_many("m", [("k", Completion("1", 3, 1, finish_reason="stop"))])
    for url in (str(path), f"sqlite:///{path}", path):
        cache = ResponseCache(url)
        assert cache.get_many(["k"])["k"].text == "1" and cache.path == path
        cache.close()
    db = sqlite3.connect(path)  # the file any earlier version wrote and reads
    assert db.execute("SELECT key, identity, text, finish_reason FROM responses").fetchall() == [("k", "m", "1", "stop")]
    db.close()


def test_default_cache_url_is_the_file_earlier_versions_used():
    assert make_cfg().cache.url == "outputs/cache/responses.sqlite"


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "inside.txt").write_text("keep")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=rf"^cache\.url={tmp_path} is a directory; set cache\.url to a file, e\.g\. "):
        ResponseCache(tmp_path)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "schema, pattern",
    [
        ("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)", r"is a SQLite database of another program \(tables: runs\)"),
        ("CREATE TABLE responses (id INTEGER PRIMARY KEY, answer TEXT)", r"has a table 'responses' that is not a response cache"),
    ],
    ids=["other_tables", "foreign_responses_table"],
)
def test_a_sqlite_database_of_another_program_is_refused_and_left_untouched(tmp_path, schema, pattern):
    path = tmp_path / "theirs.db"
    db = sqlite3.connect(path)
    db.execute(schema)
    db.commit()
    db.close()
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=pattern + r".*nothing was changed: set cache\.url to another file$"):
        ResponseCache(path)
    assert snapshot(tmp_path) == before  # not even switched to WAL mode


def test_an_empty_file_becomes_a_cache(tmp_path):
    path = tmp_path / "new.sqlite"
    path.touch()
    cache = ResponseCache(path)
    assert cache.put_many("m", [("k", Completion("1"))]) == 1 and len(cache) == 1


REFUSED = {  # (cache.url, cache.password_env): what the config check says, then what opening the store says
    "password": ((f"postgresql://me:{SECRET}@db.lab/cache", None),
                 r"^cache\.url must not contain a password .*set PGPASSWORD, use ~/\.pgpass, or name .* cache\.password_env$",
                 r"^cache\.url must not contain a password .*: use postgresql://me@db\.lab/cache and set PGPASSWORD"),
    "password_in_query": ((f"postgresql://me@db.lab/cache?password={SECRET}&sslmode=require", None),
                          r"^cache\.url must not contain a password", r"use postgresql://me@db\.lab/cache\?sslmode=require and"),
    "postgres_scheme": ((f"postgres://me:{SECRET}@db.lab/cache", None), r"^cache\.url must not contain a password",
                        r"^cache\.url must not contain a password"),
    "password_as_env_name": (("postgresql://me@db.lab/cache", SECRET),
                             r"^cache\.password_env must be the NAME of an environment variable",
                             r"^cache\.password_env must be the NAME of an environment variable"),
    "other_scheme": ((f"mysql://me:{SECRET}@db.lab/cache", None),
                     r"^cache\.url: unsupported scheme mysql://; give a path, sqlite:///PATH or postgresql://",
                     r"^cache\.url: unsupported scheme mysql://; give a file path, sqlite:///PATH or postgresql://"),
    "empty": (("", None), r"^cache\.url must not be empty", r"^cache\.url is empty"),
}


@pytest.mark.parametrize("settings, config_pattern, open_pattern", REFUSED.values(), ids=REFUSED.keys())
def test_refused_settings_name_the_key_and_never_echo_a_password(settings, config_pattern, open_pattern):
    url, password_env = settings
    with pytest.raises(ConfigError, match=config_pattern) as in_config:
        CacheSpec(url=url, password_env=password_env).validate()
    with pytest.raises(ConfigError, match=open_pattern) as on_open:  # the store checks too (culturealign-cache)
        ResponseCache(url, password_env)
    for refused in (in_config, on_open):
        assert SECRET not in str(refused.value) and "\n" not in str(refused.value)


def test_an_in_memory_sqlite_url_is_refused():
    with pytest.raises(ConfigError, match=r"names no file \(an in-memory cache keeps nothing\); use sqlite:///PATH"):
        ResponseCache("sqlite://")


def test_password_in_cache_url_stops_the_job_before_mlflow_logs_anything(paper_csv, tmp_path):
    with FakeOpenAIServer() as server:
        args = [*fake_model_overrides(server.base_url, paper_csv, tmp_path),
                f"cache.url=postgresql://me:{SECRET}@127.0.0.1:9/cache", f"hydra.run.dir={tmp_path / 'run'}"]
        result = run_cli(args, cwd=tmp_path)
        assert server.stats.http_requests == 0
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "mlruns").exists()  # refused before the MLflow run (which logs the config) exists
    assert sum("cache.url must not contain a password" in line for line in result.stderr.splitlines()) == 1
    # only Hydra's echoes of the command line hold it (README: do not type secrets on the command line)
    echoed = [line for line in (result.stdout + result.stderr).splitlines() if SECRET in line]
    assert all(line.startswith("Error executing job with overrides: [") for line in echoed), echoed
    holding = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert all(".hydra" in p.parts for p in holding), holding
