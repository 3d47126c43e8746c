"""The response cache stores every answer durably, per sample index, across processes' connections."""

from culturealign.models.base import Completion, GenerateConfig
from culturealign.models.cache import ResponseCache, cache_key

MESSAGES = ({"role": "user", "content": "Question?"},)


def test_answers_survive_reopening_and_duplicates_are_ignored(tmp_path):
    config = GenerateConfig(temperature=0.7)
    keys = [cache_key("openai:x:m", MESSAGES, config, index) for index in range(3)]
    writer = ResponseCache(tmp_path / "c.sqlite")
    writer.put_many("openai:x:m", [(key, Completion(f"answer {i}", 5, 1)) for i, key in enumerate(keys)])
    writer.put_many("openai:x:m", [(keys[0], Completion("a later duplicate", 5, 1))])
    other_process = ResponseCache(tmp_path / "c.sqlite")  # a second connection sees the committed rows
    found = other_process.get_many(keys)
    assert [found[key].text for key in keys] == ["answer 0", "answer 1", "answer 2"]
    assert all(c.cached for c in found.values()) and len(other_process) == 3
    assert set(other_process.lookup("openai:x:m", MESSAGES, config, [0, 2, 7])) == {0, 2}
    writer.close()
    other_process.close()


def test_key_covers_identity_settings_and_sample_index():
    config = GenerateConfig(temperature=0.7)
    base = cache_key("openai:x:m", MESSAGES, config, 0)
    assert base == cache_key("openai:x:m", MESSAGES, GenerateConfig(temperature=0.7), 0)
    assert base != cache_key("openai:y:m", MESSAGES, config, 0)
    assert base != cache_key("openai:x:m", MESSAGES, GenerateConfig(temperature=0.3), 0)
    assert base != cache_key("openai:x:m", MESSAGES, config, 1)


def test_cache_from_before_finish_reason_is_upgraded_in_place(tmp_path):
    import sqlite3

    from culturealign.models.base import Completion
    from culturealign.models.cache import ResponseCache

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE responses (key TEXT PRIMARY KEY, identity TEXT NOT NULL, text TEXT NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, first_token_logprobs TEXT, "
        "created REAL NOT NULL)"
    )
    db.execute("INSERT INTO responses VALUES ('old', 'm', '1', 3, 1, NULL, 0)")
    db.commit()
    db.close()
    cache = ResponseCache(path)
    cache.put_many("m", [("new", Completion("2", 3, 1, finish_reason="length"))])
    found = cache.get_many(["old", "new"])
    assert found["old"].text == "1" and found["old"].finish_reason is None
    assert found["new"].finish_reason == "length"
