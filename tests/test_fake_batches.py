"""The fake server's Batch API, driven through the real openai SDK: what the batch tests rely on."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fake_openai import BatchPlan, FakeOpenAIServer

PROMPT = (
    "From now on, respond as someone from Japan would.\nDo you like tea?\nHere are the options:\n1. Yes\n2. No\n"
    "Only output the number of the chosen option."
)


def body(seed: int, n: int = 1) -> dict:
    return {"model": "fake-gpt", "messages": [{"role": "user", "content": PROMPT}], "seed": seed, "n": n}


def upload(client, count: int, name: str = "requests.jsonl", **line) -> str:
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body(i, 2), **line} for i in range(count)]
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return client.files.create(file=(name, data, "application/jsonl"), purpose="batch").id


def run_to_end(client, batch_id: str) -> list:
    seen = []
    while not seen or seen[-1].status not in ("completed", "failed", "expired", "cancelled"):
        seen.append(client.batches.retrieve(batch_id))
    return seen


def lines(client, file_id: str | None) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()] if file_id else []


@pytest.fixture
def make_client():
    servers = []

    def start(**kwargs):
        server = FakeOpenAIServer(seeded=True, **kwargs).__enter__()
        servers.append(server)
        return server, openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)

    yield start
    for server in servers:
        server.__exit__()


def create(client, file_id: str, token: str = "t"):
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"token": token}
    )


def test_a_batch_moves_one_step_per_retrieve_and_answers_as_live_requests_do(make_client):
    server, client = make_client()
    file_id = upload(client, 3, name="culturealign-abc.jsonl")
    batch = create(client, file_id)
    assert batch.status == "validating" and batch.metadata == {"token": "t"}
    statuses = [(b.status, b.request_counts.completed) for b in run_to_end(client, batch.id)]
    assert statuses == [("in_progress", 2), ("finalizing", 3), ("completed", 3)]
    [done] = run_to_end(client, batch.id)
    output = {row["custom_id"]: row["response"] for row in lines(client, done.output_file_id)}
    assert set(output) == {"r0", "r1", "r2"} and done.error_file_id is None
    live = client.chat.completions.create(**body(1, 2))
    assert [c["message"]["content"] for c in output["r1"]["body"]["choices"]] == [c.message.content for c in live.choices]
    assert output["r1"]["status_code"] == 200
    assert server.batches.stats.lines_run == 3 and server.stats.requests == 1  # batch lines are not live requests
    assert [f.filename for f in client.files.list(purpose="batch")] == ["culturealign-abc.jsonl"]


def test_lists_are_newest_first_and_page_with_after(make_client):
    _, client = make_client()
    created = [create(client, upload(client, 1), token=str(i)).id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == created[::-1]  # the SDK follows `after`


def test_partial_failures_go_to_the_error_file(make_client):
    _, client = make_client(batch_plan=BatchPlan(fail_first_lines=2, lines_per_poll=10))
    batch = run_to_end(client, create(client, upload(client, 3)).id)[-1]
    assert batch.status == "completed" and (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
    errors = lines(client, batch.error_file_id)
    assert [row["response"]["status_code"] for row in errors] == [500, 500]
    assert [row["custom_id"] for row in lines(client, batch.output_file_id)] == ["r2"]


def test_a_batch_still_running_after_k_retrieves_expires(make_client):
    _, client = make_client(batch_plan=BatchPlan(lines_per_poll=1, expire_after_polls=1))
    batch = run_to_end(client, create(client, upload(client, 3)).id)[-1]
    assert batch.status == "expired"
    assert [row["custom_id"] for row in lines(client, batch.output_file_id)] == ["r0"]
    assert [row["error"]["code"] for row in lines(client, batch.error_file_id)] == ["batch_expired"] * 2


def test_whole_batch_failures_and_invalid_files_fail_the_batch(make_client):
    _, client = make_client(batch_plan=BatchPlan(fail_batches=1))
    failed = run_to_end(client, create(client, upload(client, 2)).id)
    assert [b.status for b in failed] == ["failed"] and failed[0].errors.data[0].code == "token_limit_exceeded"
    bad = run_to_end(client, create(client, upload(client, 2, url="/v1/embeddings")).id)[-1]
    assert bad.status == "failed" and bad.errors.data[0].line == 1
    assert run_to_end(client, create(client, upload(client, 2)).id)[-1].status == "completed"


def test_limits_of_a_batch_file_are_enforced(make_client):
    _, client = make_client(batch_plan=BatchPlan(max_requests=2))
    batch = run_to_end(client, create(client, upload(client, 3)).id)[-1]
    assert batch.status == "failed" and batch.errors.data[0].code == "too_many_requests"


def test_cancel_ends_a_batch_with_its_remaining_requests_cancelled(make_client):
    server, client = make_client(batch_plan=BatchPlan(lines_per_poll=1))
    batch = create(client, upload(client, 3))
    client.batches.retrieve(batch.id)  # in progress, one line run
    assert client.batches.cancel(batch.id).status == "cancelling"
    ended = client.batches.retrieve(batch.id)
    assert ended.status == "cancelled" and server.batches.stats.batches_cancelled == 1
    assert [row["error"]["code"] for row in lines(client, ended.error_file_id)] == ["batch_cancelled"] * 2


def test_a_held_request_waits_for_release(make_client):
    server, client = make_client()
    server.batches.hold("after_create")
    file_id = upload(client, 1)
    slow = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        create(slow, file_id)
    assert server.batches.held("after_create", timeout=10)
    server.batches.release()
    [batch] = client.batches.list()  # the batch was created although its reply never came
    assert batch.input_file_id == file_id and create(client, file_id).id != batch.id
