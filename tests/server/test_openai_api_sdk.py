""""Any OpenAI SDK works": the official ``openai`` package through the router to 2 servers (tiny model):
chat, completions, streaming, models, and an error raised as the SDK's own exception type."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai", reason="the openai package is a dev dependency (pip install -e '.[dev]')")


@pytest.fixture
def client(stack):  # the session's router + 2 servers
    sdk = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    yield sdk
    sdk.close()


def test_models(client) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_chat(client) -> None:
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "2 + 2?"}],
                                           max_tokens=6, seed=1)
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert reply.choices[0].message.role == "assistant" and isinstance(reply.choices[0].message.content, str)
    assert 0 < reply.usage.completion_tokens <= 6


def test_completions(client) -> None:
    reply = client.completions.create(model="tiny", prompt=["The answer is", "Step 1:"], max_tokens=4,
                                      extra_body={"ignore_eos": True})
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 8


def test_streaming_chat_equals_the_blocking_answer(client) -> None:
    messages = [{"role": "user", "content": "Count to three."}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                            stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_an_error_is_the_sdks_exception_with_the_servers_message(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=-1)
    assert info.value.status_code == 400
    assert "max_tokens" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
