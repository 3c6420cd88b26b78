"""A real HTTP server on loopback that records what reaches it: the witness for "this request
was never sent" (SSRF refusals) and "this header never left" (the PiAPI key)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Recorded", "Recorder", "recorder"]

CHAT_ANSWER = {
    "id": "chatcmpl-1",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "a cat surfing"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Recorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)


@contextmanager
def recorder(redirect_to: str | None = None, body: bytes | None = None) -> Iterator[Recorder]:
    """Serve on 127.0.0.1:<free port>; every request is recorded and answered with a chat
    completion (valid JSON for any caller), or with a 302 to `redirect_to`, or `body`."""
    seen: list[Recorded] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            seen.append(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("location", redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            answer = json.dumps(CHAT_ANSWER).encode() if body is None else body
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(url=f"http://127.0.0.1:{server.server_address[1]}", requests=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
