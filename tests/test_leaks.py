"""tests/leaks.py: a connection left open names the test that opened it."""

from __future__ import annotations

import asyncio
import gc
import warnings


def test_an_unclosed_transport_names_the_test_that_opened_it() -> None:
    async def leak() -> asyncio.StreamWriter:
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        return writer  # never closed

    writer = asyncio.run(leak())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del writer
        gc.collect()
    said = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    name = "tests/test_leaks.py::test_an_unclosed_transport_names_the_test_that_opened_it"
    assert any(f"was opened in {name} (call)" in message for message in said), said
