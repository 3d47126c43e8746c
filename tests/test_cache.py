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


# --- Cases found by mutation testing (tests/MUTATION.md) ---


def test_the_key_is_stable_whatever_the_order_of_a_messages_fields():
    """A key that changed between versions (or with the order a message's fields were written in) would
    silently lose every cached answer: the key of this request is pinned."""
    config = GenerateConfig(temperature=0.7)
    key = cache_key("openai:x:m", MESSAGES, config, 3)
    assert key == "b44d3780f6ab03ed6ec206699b7d6e73adb15352d979f90e523189e4e381179c"
    assert key == cache_key("openai:x:m", ({"content": "Question?", "role": "user"},), config, 3)


def test_an_answer_comes_back_whole_logprobs_and_finish_reason_included(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    logprobs = {"1": -0.25, "2": -1.5}
    cache.put_many("m", [("k1", Completion("1", 7, 1, logprobs, finish_reason="stop")),
                         ("k2", Completion("Because", 7, 3, None, finish_reason="length"))])  # fmt: skip
    found = cache.get_many(["k1", "k2"])
    assert found["k1"] == Completion("1", 7, 1, logprobs, cached=True, finish_reason="stop")
    assert found["k2"] == Completion("Because", 7, 3, None, cached=True, finish_reason="length")
    cache.close()


def test_rows_are_read_in_key_order_batch_by_batch_and_copied_as_they_are(tmp_path):
    source = ResponseCache(tmp_path / "a.sqlite")
    source.put_many("m", [(f"k{i}", Completion(f"answer {i}", 1, 1)) for i in (4, 2, 0, 3, 1)])
    batches = list(source.rows(batch=2))
    assert [[row[0] for row in chunk] for chunk in batches] == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    copy = ResponseCache(tmp_path / "b.sqlite")
    assert sum(copy.insert_rows(chunk) for chunk in batches) == 5
    assert copy.insert_rows(batches[0]) == 0  # already stored: nothing overwritten
    assert [row for chunk in copy.rows() for row in chunk] == [row for chunk in batches for row in chunk]
    source.close()
    copy.close()
