"""The OpenAI-compatible chat endpoint: shape, determinism, auth, validation, faults, stats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import pytest

from klingflow.emulator import EmulatorServer, FaultRule, key_id
from klingflow.emulator.chat import MAX_REPLY_CHARS

from ..loopback import loopback_client

PATH = "/v1/chat/completions"
FOX: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You write prompts for the Kling video model."},
        {"role": "user", "content": "Write a video prompt about a red fox running through snow"},
    ],
}


@pytest.fixture
def chat(emulator: EmulatorServer, api_key: str) -> Iterator[httpx.Client]:
    """An HTTP client for the emulator that sends the test key as a Bearer token."""
    headers = {"authorization": f"Bearer {api_key}"}
    with loopback_client(emulator.url, headers=headers, timeout=30.0) as http:
        yield http


def _ask(chat: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = chat.post(PATH, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _reply(chat: httpx.Client, content: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    text: str = _ask(chat, body)["choices"][0]["message"]["content"]
    return text


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    error: dict[str, Any] = body["error"]
    return error


def test_chat_completion_answers_in_the_openai_shape(
    emulator: EmulatorServer, chat: httpx.Client
) -> None:
    """A valid body gets a chat.completion with one assistant choice and consistent usage."""
    before = int(emulator.now())
    data = _ask(chat, FOX)
    assert set(data) == {"id", "object", "created", "model", "choices", "usage"}
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert data["model"] == "gpt-4o-mini"
    assert before <= data["created"] <= int(emulator.now())  # on the emulated clock
    [choice] = data["choices"]
    assert choice == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "A cinematic shot of red fox running through snow, soft light, "
            "slow camera push-in",
        },
        "finish_reason": "stop",
    }
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_same_messages_get_the_same_reply(chat: httpx.Client) -> None:
    """The reply depends only on the messages: repeats, models and temperatures don't change it."""
    first, second = _ask(chat, FOX), _ask(chat, {**FOX, "model": "other", "temperature": 1.5})
    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]
    assert first["id"] != second["id"]
    assert _reply(chat, "a lighthouse at dusk") != _reply(chat, "a heron over a lake")


def test_chat_ids_repeat_from_the_seed(emulator: EmulatorServer, chat: httpx.Client) -> None:
    """With a `seed`, completion ids come from the seeded stream: a reset replays them."""
    emulator.configure(seed=7)
    ids = [_ask(chat, FOX)["id"] for _ in range(2)]
    emulator.reset(keep_config=True)
    assert [_ask(chat, FOX)["id"] for _ in range(2)] == ids


def test_reply_is_about_the_last_user_message(chat: httpx.Client) -> None:
    """System and assistant messages and earlier user turns do not shape the reply."""
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a penguin expert."},
            {"role": "user", "content": "penguins on ice"},
            {"role": "assistant", "content": "A cinematic shot of penguins on ice"},
            {"role": "user", "content": "Now make it about a hot air balloon over canyons"},
        ],
    }
    text = _ask(chat, body)["choices"][0]["message"]["content"]
    assert text.startswith("A cinematic shot of")
    assert "balloon over canyons" in text
    assert "penguin" not in text


@pytest.mark.parametrize(
    "content",
    [
        'Idea: a cat learning to surf\nStyle: "cinematic", golden hour',
        'the cat\'s hat, with ‘curly’ and "straight" quotes',
        "word " * 400,
        "x" * 1000,
        "",
    ],
)
def test_reply_is_one_short_line_without_quotes(chat: httpx.Client, content: str) -> None:
    """Whatever the user writes, the reply is one line of at most 300 chars with no quotes."""
    text = _reply(chat, content)
    assert text.startswith("A cinematic shot of ")
    assert text.endswith(", soft light, slow camera push-in")
    assert len(text) <= MAX_REPLY_CHARS
    assert not set(text) & set("\n\r\"'‘’“”")


def test_reply_without_user_words_has_a_fallback_subject(chat: httpx.Client) -> None:
    """When the last user message holds only request words, a fixed subject stands in."""
    assert _reply(chat, "Please write a short video prompt") == (
        "A cinematic shot of a quiet landscape at dawn, soft light, slow camera push-in"
    )


def test_max_tokens_cuts_the_reply_with_finish_reason_length(chat: httpx.Client) -> None:
    """A reply longer than max_tokens is cut to that many tokens, and the choice says so."""
    data = _ask(chat, {**FOX, "max_tokens": 4})
    [choice] = data["choices"]
    assert choice["message"]["content"] == "A cinematic shot of"
    assert choice["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": "Bearer"},
        {"authorization": "Basic a2YtdGVzdC1rZXk="},
        {"x-api-key": "kf-test-key-7d1c0a5e9b3f"},  # the task API's header does not count here
    ],
)
def test_chat_without_a_valid_bearer_key_is_401(
    emulator: EmulatorServer, headers: dict[str, str]
) -> None:
    """A missing, unknown or non-Bearer key gets 401 in OpenAI's error shape."""
    response = httpx.post(emulator.url + PATH, json=FOX, headers=headers)
    error = _openai_error(response, 401)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert "Bearer" in error["message"]


def test_chat_accepts_any_non_empty_key_when_none_are_configured(
    emulator: EmulatorServer,
) -> None:
    """With no api_keys configured, any non-empty Bearer key is accepted, as on the task API."""
    emulator.configure(api_keys=[])
    headers = {"authorization": "bearer some-other-key"}
    response = httpx.post(emulator.url + PATH, json=FOX, headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": FOX["messages"]}, "model", "missing_required_parameter"),
        ({"model": "", "messages": FOX["messages"]}, "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role", None),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", None),
        (
            {"model": "m", "messages": [{"role": ["user"], "content": "x"}]},
            "messages[0].role",
            None,
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user"}]},
            "messages[1].content",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content",
            "invalid_type",
        ),
        ({**FOX, "temperature": 3}, "temperature", "invalid_value"),
        ({**FOX, "temperature": "hot"}, "temperature", "invalid_value"),
        ({**FOX, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({**FOX, "max_tokens": True}, "max_tokens", "invalid_value"),
        ({**FOX, "stream": True}, "stream", "unsupported_value"),
    ],
)
def test_invalid_chat_bodies_are_400_naming_the_field(
    chat: httpx.Client, body: dict[str, Any], param: str, code: str | None
) -> None:
    """Each broken rule gets 400 with an OpenAI-style error whose param and message name it."""
    error = _openai_error(chat.post(PATH, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"].startswith(f"{param}: ")
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]"])
def test_chat_body_that_is_not_a_json_object_is_400(chat: httpx.Client, content: bytes) -> None:
    """A body that is not a JSON object gets 400 without a param."""
    response = chat.post(PATH, content=content, headers={"content-type": "application/json"})
    error = _openai_error(response, 400)
    assert error["param"] is None
    assert "JSON" in error["message"]


def test_error_fault_on_the_chat_route_answers_in_the_openai_shape(
    emulator: EmulatorServer, chat: httpx.Client
) -> None:
    """An error fault for /v1/chat/completions answers its 5xx as OpenAI would, then wears off."""
    emulator.add_fault(FaultRule(action="error", status=503, path=PATH))
    error = _openai_error(chat.post(PATH, json=FOX), 503)
    assert error == {
        "message": "service unavailable (injected)",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    _ask(chat, FOX)


def test_rate_limit_fault_on_the_chat_route_sends_retry_after(
    emulator: EmulatorServer, chat: httpx.Client
) -> None:
    """An injected rate_limit answers 429 rate_limit_exceeded with its Retry-After."""
    emulator.add_fault(FaultRule(action="rate_limit", path=PATH, retry_after_seconds=7))
    response = chat.post(PATH, json=FOX)
    assert _openai_error(response, 429)["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("action", ["drop", "malformed"])
def test_broken_body_faults_apply_to_the_chat_route(
    emulator: EmulatorServer, chat: httpx.Client, action: Literal["drop", "malformed"]
) -> None:
    """drop closes the connection mid-body and malformed sends cut JSON, after the handler ran."""
    emulator.add_fault(FaultRule(action=action, path=PATH, phase="after"))
    if action == "drop":
        with pytest.raises(httpx.RemoteProtocolError):
            chat.post(PATH, json=FOX)
    else:
        response = chat.post(PATH, json=FOX)
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert emulator.stats()["chat_requests"] == 1


def test_slow_fault_delays_the_chat_answer(emulator: EmulatorServer, chat: httpx.Client) -> None:
    """A slow fault on the chat route waits its real delay, then answers normally."""
    emulator.add_fault(FaultRule(action="slow", path=PATH, delay_seconds=0.3))
    response = chat.post(PATH, json=FOX)
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.3


def test_rpm_limit_covers_the_chat_route(emulator: EmulatorServer, chat: httpx.Client) -> None:
    """The per-key rate limit counts chat calls too and refuses the extra one with 429."""
    emulator.configure(rate_limit={"requests": 2, "window_seconds": 60})
    _ask(chat, FOX)
    _ask(chat, FOX)
    response = chat.post(PATH, json=FOX)
    error = _openai_error(response, 429)
    assert error["message"] == "rate limit exceeded"
    assert int(response.headers["retry-after"]) >= 1
    assert emulator.stats()["rate_limited"] == 1


def test_chat_requests_are_counted_in_totals_and_per_key(
    emulator: EmulatorServer, chat: httpx.Client, api_key: str
) -> None:
    """chat_requests counts every chat call, refused ones included, under the key's id."""
    _ask(chat, FOX)
    chat.post(PATH, json={"model": "m", "messages": []})
    httpx.post(emulator.url + PATH, json=FOX, headers={"authorization": "Bearer nope"})
    stats = emulator.stats()
    assert stats["chat_requests"] == 3
    assert stats["keys"][key_id(api_key)]["chat_requests"] == 2
    assert stats["keys"][key_id("nope")]["chat_requests"] == 1
    assert (stats["creates"], stats["gets"]) == (0, 0)


def test_wrong_method_on_the_chat_route_answers_an_openai_error(emulator: EmulatorServer) -> None:
    """Under /v1/ even routing errors (405, 404) use OpenAI's error shape, not the envelope."""
    assert _openai_error(httpx.get(emulator.url + PATH), 405)["type"] == "invalid_request_error"
    _openai_error(httpx.post(emulator.url + "/v1/embeddings", json={}), 404)
