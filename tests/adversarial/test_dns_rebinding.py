"""DNS rebinding: a name that resolves to a public address for the check and to loopback for
the connection is refused, by `http.request` and `download` alike (issue #15, point 14).

DNS is the outside world here, so the test stands in for a rebinding DNS server by
answering `rebind.test` from `socket.getaddrinfo`: a public address first, loopback after.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer

from ..workflows.recorder import recorder
from .conftest import CLI, Cases, secrets_of
from .test_cli_inputs import check

RUN_NOT_COMPLETED = 16
PUBLIC = "93.184.215.14"  # a public address: what the rebinding server answers first


def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """`rebind.test` resolves to PUBLIC once, then to 127.0.0.1; returns the lookups."""
    real = socket.getaddrinfo
    lookups: list[object] = []

    def answer(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("rebind.test", b"rebind.test"):  # anyio asks in bytes
            lookups.append(host)
            return real(PUBLIC if len(lookups) == 1 else "127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", answer)
    return lookups


@pytest.mark.parametrize("node_type", ["http.request", "download"])
def test_a_rebinding_name_is_refused_at_connection_time(
    klingflow: CLI, emulator: EmulatorServer, api_key: str, tmp_path: Path, cases: Cases,
    monkeypatch: pytest.MonkeyPatch, node_type: str,
) -> None:  # fmt: skip
    """The check sees a public address, the connection would reach loopback: the node
    pauses with the reason, not retried, and the loopback service receives nothing."""
    with recorder() as local:
        port = local.url.rsplit(":", 1)[1]
        path = tmp_path / "rebind.yaml"
        path.write_text(f"""\
name: rebind
nodes:
  - id: call
    type: {node_type}
    with: {{url: "http://rebind.test:{port}/video.mp4"}}
""")
        lookups = rebinding(monkeypatch)
        result = klingflow("run", str(path))
        assert local.requests == []
    assert len(lookups) >= 2  # checked, then resolved again to connect
    failures: list[str] = []
    check(failures, node_type, result.output, result.exit_code, result.exception,
          {RUN_NOT_COMPLETED}, "rebind.test", secrets_of(api_key))  # fmt: skip
    cases.add("dns rebinding")
    assert failures == [], "\n".join(failures)
    assert "loopback" in result.output
    assert emulator.stats()["creates"] == 0
