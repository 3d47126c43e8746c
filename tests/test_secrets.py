"""API keys come only from the environment and never reach MLflow, Hydra's outputs, logs or the cache."""

from tests.fake_openai import FakeOpenAIServer
from tests.jobs import small_sweep

KEY = "sk-culturealign-test-7f3a9c2e51d04b86"


def files_containing(root, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_api_key_is_sent_but_never_stored(tmp_path, paper_csv):
    with FakeOpenAIServer() as server:
        overrides = ["model.api_key_env=CULTUREALIGN_TEST_KEY", "style=classification,cot"]  # judge: same variable
        result = small_sweep(server.base_url, paper_csv, tmp_path, *overrides, env={"CULTUREALIGN_TEST_KEY": KEY})
        sent = set(server.stats.authorizations)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sent == {f"Bearer {KEY}"} and server.stats.by_kind["judge"] > 0
    stored = {path.name for path in tmp_path.rglob("*") if path.is_file()}
    assert {"mlflow.db", "cache.sqlite", "config.yaml", "responses.jsonl", "multirun.yaml"} <= stored
    for needle in (KEY, KEY[len("sk-") :], KEY[-12:]):  # the key, and pieces of it
        assert files_containing(tmp_path, needle.encode()) == []
        assert needle not in result.stdout + result.stderr
