"""PiAPI's OpenAI-compatible chat endpoint, answered deterministically without a model.

`POST /v1/chat/completions` takes OpenAI's body and answers in OpenAI's shape, with OpenAI's
`{"error": {...}}` instead of PiAPI's envelope. The reply is a one-line video prompt built
from the main words of the last user message, so a workflow that asks an LLM to write a
Kling prompt gets a usable one offline, and the same messages always get the same text.
Token counts are an approximation: words and punctuation marks, as a tokenizer roughly sees
them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

__all__ = [
    "MAX_REPLY_CHARS",
    "UNAUTHORIZED",
    "ChatMessage",
    "ChatRequest",
    "ChatRequestError",
    "bearer_key",
    "completion",
    "openai_error",
    "parse_chat_request",
    "reply_text",
]

ROLES = ("system", "user", "assistant")
MAX_REPLY_CHARS = 300
UNAUTHORIZED = "Incorrect API key provided: invalid or missing key (Authorization: Bearer)"

_TEMPLATE = "A cinematic shot of {subject}, soft light, slow camera push-in"
_FALLBACK_SUBJECT = "a quiet landscape at dawn"
_MAX_SUBJECT_WORDS = 16
_TOKENS_PER_MESSAGE = 3  # OpenAI's chat format wraps each message in a few tokens
_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")
_TOKEN = re.compile(r"\w+|[^\w\s]")
# Words that carry the request, not its subject: "Write a short video prompt about ...".
_STOPWORD_TEXT = """
    a an the this that these those some any and or but so then about for
    i me my you your we us our it its they them their please
    is are was were be been am do does did can could would should will shall may might must
    write create generate make give describe produce draft compose imagine show need want
    prompt prompts video videos clip kling idea style reply only one short single sentence
    paragraph description text words
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class ChatRequestError(Exception):
    """The chat body breaks a rule; `param` names the field (None: the whole body)."""

    def __init__(self, message: str, *, param: str | None, code: str) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation; only its role and text shape the reply."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat body; fields the emulator has no use for are dropped."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    max_tokens: int | None = None


def bearer_key(request: Request) -> str:
    """The key of `Authorization: Bearer <key>` (scheme case-insensitive), or ""."""
    scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def openai_error(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    """An error as OpenAI words it; `type` and a default `code` follow from the status."""
    if status == 429:
        kind, default_code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, default_code = "server_error", None
    else:
        kind = "invalid_request_error"
        default_code = "invalid_api_key" if status == 401 else None
    body = {"message": message, "type": kind, "param": param, "code": code or default_code}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _missing_or_wrong(name: str, value: object, expected: str) -> ChatRequestError:
    if value is None:
        return ChatRequestError(f"{name}: required", param=name, code="missing_required_parameter")
    return ChatRequestError(f"{name}: must be {expected}", param=name, code="invalid_type")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate a chat body; raise `ChatRequestError` naming the first field that is wrong."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ChatRequestError(
            "the request body must be JSON", param=None, code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ChatRequestError(
            "the request body must be a JSON object", param=None, code="invalid_type"
        )
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model.strip():
        raise _missing_or_wrong("model", model, "a non-empty string")
    if not isinstance(messages, list):
        raise _missing_or_wrong("messages", messages, "a list of {role, content} objects")
    if not messages:
        raise ChatRequestError("messages: must not be empty", param="messages", code="empty_array")
    parsed = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _missing_or_wrong(where, message, "an object with role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise ChatRequestError(
                f"{where}.role: must be one of {', '.join(ROLES)}",
                param=f"{where}.role",
                code="missing_required_parameter" if role is None else "invalid_value",
            )
        if not isinstance(content, str):
            raise _missing_or_wrong(f"{where}.content", content, "a string")
        parsed.append(ChatMessage(role, content))
    temperature, max_tokens = body.get("temperature"), body.get("max_tokens")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 2):
        raise ChatRequestError(
            "temperature: must be a number from 0 to 2", param="temperature", code="invalid_value"
        )
    if max_tokens is not None and not (
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1
    ):
        raise ChatRequestError(
            "max_tokens: must be an integer >= 1", param="max_tokens", code="invalid_value"
        )
    if body.get("stream"):
        # Answering JSON to a client that waits for server-sent events would confuse it.
        raise ChatRequestError(
            "stream: not supported by the emulator; leave it out or send false",
            param="stream",
            code="unsupported_value",
        )
    return ChatRequest(
        model=model,
        messages=tuple(parsed),
        temperature=None if temperature is None else float(temperature),
        max_tokens=max_tokens,
    )


def reply_text(messages: tuple[ChatMessage, ...]) -> str:
    """The assistant's reply: a one-line video prompt about the last user message.

    It depends only on that message's wording, holds no quotes, and is at most
    `MAX_REPLY_CHARS` long; without user words the subject is a quiet landscape.
    """
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    budget = MAX_REPLY_CHARS - len(_TEMPLATE.format(subject=""))
    seen: set[str] = set()
    words: list[str] = []
    # Apostrophes go so that "cat's" stays one word and no quote mark reaches the prompt.
    for word in _WORD.findall(last.replace("'", "").replace("\u2019", "")):
        folded = word.casefold()
        if folded in _STOPWORDS or folded in seen:
            continue
        seen.add(folded)
        candidate = " ".join([*words, word])
        if len(words) == _MAX_SUBJECT_WORDS or len(candidate) > budget:
            if not words:  # one word longer than the whole budget: cut it
                words.append(word[:budget])
            break
        words.append(word)
    return _TEMPLATE.format(subject=" ".join(words) or _FALLBACK_SUBJECT)


def _count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def completion(request: ChatRequest, *, completion_id: str, created: int) -> dict[str, Any]:
    """The chat completion object; a reply longer than `max_tokens` is cut, reason "length"."""
    content, finish_reason = reply_text(request.messages), "stop"
    tokens = list(_TOKEN.finditer(content))
    if request.max_tokens is not None and len(tokens) > request.max_tokens:
        content, finish_reason = content[: tokens[request.max_tokens - 1].end()], "length"
        tokens = tokens[: request.max_tokens]
    prompt_tokens = _TOKENS_PER_MESSAGE * (len(request.messages) + 1) + sum(
        _count_tokens(m.content) for m in request.messages
    )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        },
    }
