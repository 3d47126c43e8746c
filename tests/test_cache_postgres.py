"""The response cache on a PostgreSQL server, shared by every process of every node (cache.url=postgresql://...).

A real server from Debian's `postgresql` package is started by the tests (tests/postgres.py); without it the
fixture FAILS, saying how to install it: these tests are never skipped.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from culturealign.errors import CacheError, ConfigError
from culturealign.models.base import Completion, GenerateConfig
from culturealign.models.cache import ResponseCache, cache_key
from tests.fake_openai import FakeOpenAIServer, Policy
from tests.helpers import fake_model_overrides, run_cli
from tests.jobs import only_run
from tests.postgres import PASSWORD, PostgresServer, PostgresUnavailable, free_port

PASSWORD_ENV = "CULTUREALIGN_TEST_PG_PASSWORD"
MESSAGES = ({"role": "user", "content": "Question?"},)


def own_server() -> PostgresServer:
    """A PostgreSQL server of one's own (a test that stops it must not stop the others' server)."""
    try:
        return PostgresServer().start()
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def postgres():
    server = own_server()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(postgres, monkeypatch) -> str:
    """A new empty database on the shared server; the password reaches jobs only through PASSWORD_ENV."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return postgres.create_database(f"cache_{uuid.uuid4().hex[:12]}")


def cache_rows(cache: ResponseCache) -> list[tuple]:
    return [row for batch in cache.rows() for row in batch]


def files_containing(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_same_answers_and_keys_as_the_sqlite_cache(pg_url, tmp_path):
    config = GenerateConfig(temperature=0.7)
    keys = [cache_key("openai:x:m", MESSAGES, config, index) for index in range(3)]
    answers = [
        Completion("1", 5, 1),
        Completion("2", 5, 1, first_token_logprobs={"2": -0.1, "1": -2.4}, finish_reason="stop"),
        Completion("long", 5, 9, finish_reason="length"),
    ]
    stores = {"postgres": ResponseCache(pg_url, PASSWORD_ENV), "sqlite": ResponseCache(tmp_path / "c.sqlite")}
    for cache in stores.values():
        assert cache.put_many("openai:x:m", list(zip(keys, answers))) == 3
        assert cache.put_many("openai:x:m", [(keys[0], Completion("a later duplicate", 5, 1))]) == 0
        cache.close()
    reopened = {name: ResponseCache(url, PASSWORD_ENV) for name, url in (("postgres", pg_url), ("sqlite", tmp_path / "c.sqlite"))}
    found = {name: cache.get_many(keys + ["absent"]) for name, cache in reopened.items()}
    assert found["postgres"] == found["sqlite"] == {k: Completion(a.text, a.prompt_tokens, a.completion_tokens,
                                                                 a.first_token_logprobs, True, a.finish_reason)
                                                    for k, a in zip(keys, answers)}
    assert set(reopened["postgres"].lookup("openai:x:m", MESSAGES, config, [0, 2, 7])) == {0, 2}
    assert len(reopened["postgres"]) == 3
    strip_time = lambda rows: [row[:6] + row[7:] for row in rows]  # noqa: E731 - created differs by a few ms
    assert strip_time(cache_rows(reopened["postgres"])) == strip_time(cache_rows(reopened["sqlite"]))
    for cache in reopened.values():
        cache.close()


WRITERS, KEYS, WINDOW = 4, 400, 250


def _writer(url: str, worker: int, barrier, results) -> None:
    """One process: its window of keys (overlapping every other writer's), in small transactions."""
    keys = [f"key-{i:04d}" for i in range(worker * 50, worker * 50 + WINDOW)]
    if worker % 2:
        keys.reverse()  # collide with the neighbours from the other end
    cache = ResponseCache(url, PASSWORD_ENV)
    barrier.wait(timeout=120)
    inserted = 0
    for start in range(0, len(keys), 5):
        entries = [(key, Completion(f"{key} from writer {worker}", 3, 1)) for key in keys[start : start + 5]]
        inserted += cache.put_many("openai:x:m", entries)
    found = cache.get_many(keys)
    cache.close()
    results.put((worker, inserted, sorted(found) == sorted(keys)))


def test_four_processes_writing_overlapping_answers_lose_nothing_and_duplicate_nothing(pg_url):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS), context.Queue()
    processes = [context.Process(target=_writer, args=(pg_url, w, barrier, results)) for w in range(WRITERS)]
    for process in processes:
        process.start()
    reports = {}
    for _ in processes:
        worker, inserted, saw_all = results.get(timeout=300)
        reports[worker] = (inserted, saw_all)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    cache = ResponseCache(pg_url, PASSWORD_ENV)
    rows = cache_rows(cache)
    cache.close()
    assert [row[0] for row in rows] == [f"key-{i:04d}" for i in range(KEYS)]  # every key once (key order)
    assert sum(inserted for inserted, _ in reports.values()) == KEYS  # each key inserted by exactly one writer
    for worker, (inserted, saw_all) in reports.items():
        assert saw_all  # each writer reads back every answer it asked for, whoever stored it
        # the first answer stored under a key stays: a writer's text is there exactly where it inserted
        assert sum(row[2].endswith(f"writer {worker}") for row in rows) == inserted


def sweep_args(server, data, workdir: Path, url: str) -> list[str]:
    return [
        "--multirun",
        *fake_model_overrides(server.base_url, data, workdir),
        f"cache.url={url}",
        f"cache.password_env={PASSWORD_ENV}",
        "style=classification,cot",
        "samples=3",
        "dataset.limit=2",
        f"hydra.sweep.dir={workdir / 'multirun'}",
    ]


def test_sweep_resumed_on_another_node_sends_no_request(pg_url, paper_csv, tmp_path):
    env = {PASSWORD_ENV: PASSWORD}
    with FakeOpenAIServer() as server:
        node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"  # own working dirs, outputs and MLflow stores
        node_a.mkdir(), node_b.mkdir()
        first = run_cli(sweep_args(server, paper_csv, node_a, pg_url), cwd=node_a, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        kinds = server.stats.by_kind
        assert kinds["classification"] == kinds["free"] == 6 and kinds["judge"] > 0
        server.stats.reset()
        again = run_cli(sweep_args(server, paper_csv, node_b, pg_url), cwd=node_b, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.stats.requests == 0
    cache = ResponseCache(pg_url, PASSWORD_ENV)
    assert len(cache) == 12 + kinds["judge"]  # model answers and judge outputs, once each
    cache.close()
    assert not list(tmp_path.rglob("*.sqlite"))  # no job fell back to a local file
    for result in (first, again):
        assert PASSWORD not in result.stdout + result.stderr
    assert files_containing(tmp_path, PASSWORD) == []


class StopDatabaseAt(Policy):
    """Kills the database server (as a node failure would) while request `at` is being answered."""

    def __init__(self, at: int, database: PostgresServer):
        super().__init__(seed=0)
        self.at, self.database, self.server = at, database, None

    def classification_answer(self, rng, question_key, n_options):
        if self.server.stats.requests == self.at and self.database is not None:
            self.database.stop("immediate")
            self.database = None
        return super().classification_answer(rng, question_key, n_options)


def test_database_going_away_mid_job_fails_it_with_one_line_and_keeps_every_stored_answer(paper_csv, tmp_path, monkeypatch):
    """One request at a time, so when request 8 reaches the server, answers 1-7 have been stored."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    planned, at = 4 * 5, 8
    database = own_server()
    try:
        url = database.create_database("cache")
        policy = StopDatabaseAt(at, database)
        with FakeOpenAIServer(policy=policy) as server:
            policy.server = server

            def job(workdir: Path) -> subprocess.CompletedProcess:
                workdir.mkdir()
                args = [*fake_model_overrides(server.base_url, paper_csv, workdir), f"cache.url={url}",
                        f"cache.password_env={PASSWORD_ENV}", "style=classification", "samples=5", "dataset.limit=4",
                        "concurrency=1", "model.retry_backoff=0.01", f"hydra.run.dir={workdir / 'run'}"]
                return run_cli(args, cwd=workdir)  # the password: PASSWORD_ENV, inherited

            failed = job(tmp_path / "node-a")
            assert at <= server.stats.requests <= at + 1  # + the one request in flight when the job stopped
            assert failed.returncode == 1
            assert "Traceback" not in failed.stderr
            [line] = [line for line in failed.stderr.splitlines() if "response cache" in line]
            assert f"postgresql://culturealign@127.0.0.1:{database.port}/cache failed while storing" in line
            assert "every answer stored before is kept" in line and PASSWORD not in failed.stderr
            _, run = only_run(tmp_path / "node-a")
            assert run.info.status == "FAILED" and "response cache" in run.data.tags["culturealign.error"]

            database.start()  # the server is back: nothing committed was lost
            cache = ResponseCache(url, PASSWORD_ENV)
            assert len(cache) == at - 1
            cache.close()

            server.stats.reset()
            resumed = job(tmp_path / "node-b")  # the same job, from another node
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            assert server.stats.requests == planned - (at - 1)
        cache = ResponseCache(url, PASSWORD_ENV)
        assert len(cache) == planned
        cache.close()
    finally:
        database.cleanup()


def copy(src, dst, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "culturealign.cache_cli", "copy", str(src), str(dst), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def fill(cache: ResponseCache, count: int, identity: str, offset: int = 0) -> None:
    config = GenerateConfig(temperature=0.7)
    for start in range(offset, offset + count, 10):
        entries = [
            (cache_key(identity, MESSAGES, config, i),
             Completion(f"answer {i}", 7, i % 5, {"1": -0.5 - i} if i % 3 == 0 else None, finish_reason=[None, "stop", "length"][i % 3]))
            for i in range(start, min(start + 10, offset + count))
        ]
        cache.put_many(identity, entries)


def test_copy_round_trips_sqlite_postgres_sqlite_and_adds_nothing_twice(pg_url, tmp_path):
    original = tmp_path / "node-local.sqlite"
    cache = ResponseCache(original)
    fill(cache, 230, "openai:http://a/v1:m")
    fill(cache, 20, "openai:http://b/v1:judge")
    before = cache_rows(cache)
    cache.close()
    args = ("--password-env", PASSWORD_ENV, "--batch", "100")

    up = copy(original, pg_url, *args)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"copied 250 answers from {original} to {pg_url}; skipped 0 already there"
    again = copy(f"sqlite:///{original}", pg_url, *args)
    assert "copied 0 answers" in again.stdout and "skipped 250 already there" in again.stdout

    shared = ResponseCache(pg_url, PASSWORD_ENV)
    assert cache_rows(shared) == before  # every column as it was, the time of each answer included
    fill(shared, 5, "openai:http://a/v1:m", offset=1000)  # answers another node added since
    after = cache_rows(shared)
    shared.close()

    back = copy(pg_url, tmp_path / "fresh" / "back.sqlite", *args)
    assert back.returncode == 0, back.stderr
    assert "copied 255 answers" in back.stdout and "skipped 0" in back.stdout
    assert cache_rows(ResponseCache(tmp_path / "fresh" / "back.sqlite")) == after
    home = copy(pg_url, original, *args, env={"PGPASSWORD": "not-used-when-a-variable-is-named"})
    assert "copied 5 answers" in home.stdout and "skipped 250 already there" in home.stdout
    assert cache_rows(ResponseCache(original)) == after
    for result in (up, again, back, home):
        assert PASSWORD not in result.stdout + result.stderr


def test_copy_from_a_missing_cache_fails_with_one_line_and_creates_nothing(tmp_path):
    result = copy(tmp_path / "nope.sqlite", tmp_path / "dst.sqlite")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"culturealign-cache: error: SRC: the response cache {tmp_path / 'nope.sqlite'} does not exist"
    assert list(tmp_path.iterdir()) == []


def test_wrong_password_and_unreachable_server_are_one_line_config_errors(postgres, pg_url, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    with pytest.raises(ConfigError, match=r"password authentication failed .*set PGPASSWORD .* cache\.password_env$"):
        ResponseCache(pg_url, PASSWORD_ENV)
    monkeypatch.setenv("PGPASSWORD", "wrong-too")
    with pytest.raises(ConfigError, match=r"password authentication failed"):
        ResponseCache(pg_url)  # libpq's own variable
    closed = pg_url.replace(f":{postgres.port}/", f":{free_port()}/")
    with pytest.raises(ConfigError, match=r"^cannot open the response cache postgresql://.*Connection refused.*fix cache\.url$"):
        ResponseCache(closed)
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigError, match=rf"^cache\.password_env names {PASSWORD_ENV}, which is not set"):
        ResponseCache(pg_url, PASSWORD_ENV)
    with postgres.connect(pg_url.rsplit("/", 1)[1]) as connection:  # none of it created anything
        assert connection.execute("SELECT to_regclass('responses')").fetchone() == (None,)


def test_a_responses_table_of_another_program_is_refused_and_left_alone(postgres, pg_url):
    database = pg_url.rsplit("/", 1)[1]
    with postgres.connect(database) as connection:
        connection.execute("CREATE TABLE responses (id SERIAL PRIMARY KEY, survey TEXT)")
        connection.execute("INSERT INTO responses (survey) VALUES ('theirs')")
    with pytest.raises(ConfigError, match=r"table 'responses' that is not a response cache .*set cache\.url to another"):
        ResponseCache(pg_url, PASSWORD_ENV)
    with postgres.connect(database) as connection:
        columns = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'responses' ORDER BY ordinal_position"
        ).fetchall()
        assert columns == [("id",), ("survey",)]
        assert connection.execute("SELECT survey FROM responses").fetchall() == [("theirs",)]


def test_job_with_a_wrong_password_stops_before_any_request_with_one_line(pg_url, paper_csv, tmp_path):
    with FakeOpenAIServer() as server:
        args = [*fake_model_overrides(server.base_url, paper_csv, tmp_path), f"cache.url={pg_url}",
                f"cache.password_env={PASSWORD_ENV}", "dataset.limit=2", "samples=2", f"hydra.run.dir={tmp_path / 'run'}"]
        result = run_cli(args, cwd=tmp_path, env={PASSWORD_ENV: "wrong-password"})
        assert server.stats.http_requests == 0
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "response cache" in line]
    assert "password authentication failed" in line and line.endswith("cache.password_env")
    assert "wrong-password" not in result.stdout + result.stderr
    assert files_containing(tmp_path, "wrong-password") == []


def test_a_server_that_goes_away_raises_cache_error_and_a_restarted_one_is_reconnected_to(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    database = own_server()
    try:
        cache = ResponseCache(database.create_database("gone"), PASSWORD_ENV)
        cache.put_many("m", [("kept", Completion("1", 1, 1))])
        database.stop("immediate")
        with pytest.raises(CacheError, match=r"failed while reading .*every answer stored before is kept"):
            cache.get_many(["kept"])
        with pytest.raises(CacheError, match=r"failed while storing answers"):
            cache.put_many("m", [("lost", Completion("2", 1, 1))])
        database.start()
        assert set(cache.get_many(["kept", "lost"])) == {"kept"}  # the same cache object, a new connection
        cache.close()
    finally:
        database.cleanup()


def test_without_postgresql_the_fixture_fails_saying_how_to_install_it(monkeypatch):
    import tests.postgres as postgres_module

    monkeypatch.setattr(postgres_module.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(postgres_module.shutil, "which", lambda name: None)
    with pytest.raises(PostgresUnavailable, match=r"no initdb found .*apt-get install -y --no-install-recommends postgresql"):
        PostgresServer()
