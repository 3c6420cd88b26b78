"""The glue nodes (`ai.chat`, `http.request`, `download`) keep secrets and the network safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.errors import DownloadError
from klingflow.piapi import PiAPI
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.steering import Action, Command

from .harness import Harness
from .recorder import recorder


def chat_workflow(base_url: str) -> str:
    return f"""
name: chat-elsewhere
nodes:
  - id: write
    type: ai.chat
    with:
      prompt: hello
      base_url: "{base_url}"
"""


def test_piapi_key_never_goes_to_another_port_on_piapi_host(harness: Harness, api_key: str) -> None:
    """A chat endpoint on PiAPI's host but another port gets no PiAPI key."""
    with recorder() as other:
        run = harness.run(chat_workflow(other.url))
    assert run.status == RunStatus.COMPLETED, run.message
    [seen] = other.requests
    assert seen.path == "/v1/chat/completions"
    assert api_key not in str(seen.headers)
    assert "authorization" not in seen.headers


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", False),
        ("https://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("not a url at all", False),
    ],
)
def test_piapi_origin_is_scheme_host_and_port(url: str, same: bool) -> None:
    """Only PiAPI's exact scheme, host and port count as PiAPI."""
    with PiAPI(api_key="k", base_url="http://127.0.0.1:8000") as client:
        assert client.is_piapi_origin(url) is same


VIDEO = """
name: one-video
nodes:
  - id: clip
    type: kling.video
    with: {prompt: a red fox, duration: 5}
"""


def test_a_download_failing_after_payment_pauses_and_retry_fetches_without_paying(
    harness: Harness, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An output folder that cannot be made pauses the paid node (task id kept); retry saves."""
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder belongs")
    run = harness.run(VIDEO)
    assert run.status == RunStatus.PAUSED, run.message
    assert run.paused_node == "clip"
    assert "paid for; not lost" in (run.message or "")
    [task] = emulator.tasks()
    assert task["task_id"] in (run.message or "")
    blocker.unlink()
    done = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert done.status == RunStatus.COMPLETED, done.message
    assert Path(done.outputs.get("path") or next(Path(done.output_dir).glob("*.mp4"))).exists()
    assert emulator.stats()["creates"] == 1


def call(url: str, *, node_type: str = "http.request", extra: str = "") -> str:
    return f"""
name: egress
retry: {{attempts: 3, initial_delay_seconds: 0.01}}
nodes:
  - id: call
    type: {node_type}
    with:
      url: "{url}"{extra}
"""


@pytest.mark.parametrize("node_type", ["http.request", "download"])
def test_loopback_hosts_are_refused_without_a_request_or_a_retry(
    harness: Harness, emulator: EmulatorServer, node_type: str
) -> None:
    """A node pointed at another loopback service pauses at once; the service sees nothing."""
    with recorder() as local:
        run = harness.run(call(f"{local.url}/video.mp4", node_type=node_type))
        assert local.requests == []
    assert run.status == RunStatus.PAUSED, run.message
    assert "loopback" in (run.message or "")
    assert [a.number for a in harness.runlog().attempts(run.run_id)] == [1]


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/x", "http://[::1]:9/x"],
)
def test_link_local_and_private_addresses_are_refused(harness: Harness, url: str) -> None:
    """Cloud metadata, RFC 1918 and IPv6 loopback are refused before any connection."""
    run = harness.run(call(url))
    assert run.status == RunStatus.PAUSED, run.message
    assert "refusing" in (run.message or "")


def test_the_emulator_control_api_is_never_reachable_by_default(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """PiAPI's own origin is allowed, but not its /_emulator/* admin API."""
    run = harness.run(call(f"{emulator.url}/_emulator/reset", extra="\n      method: POST"))
    assert run.status == RunStatus.PAUSED, run.message
    assert "control API" in (run.message or "")


def test_a_node_or_a_setting_may_allow_a_private_host(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """allow_private_network on the node, or KLINGFLOW_ALLOW_PRIVATE_HOSTS, lets it through."""
    with recorder() as local:
        run = harness.run(call(f"{local.url}/a", extra="\n      allow_private_network: true"))
        assert run.status == RunStatus.COMPLETED, run.message
        host = local.url.removeprefix("http://")

        async def work(engine: Engine) -> RunRecord:
            started = await engine.start_run(load_workflow_text(call(f"{local.url}/b")), {})
            [record] = await engine.wait([started.run_id], timeout_seconds=60)
            return record

        second = harness.session(work, allow_private_hosts=host)
        assert second.status == RunStatus.COMPLETED, second.message
        assert [r.path for r in local.requests] == ["/a", "/b"]


def test_a_header_with_crlf_is_not_retried(harness: Harness, emulator: EmulatorServer) -> None:
    """A header value with CR/LF (from a trigger) is a permanent error: one attempt, a pause;
    written in the file, `validate` refuses it."""
    extra = '\n      headers: {x-a: "{{ trigger.h }}"}'
    run = harness.run(call(f"{emulator.url}/account/info", extra=extra), {"h": "a\r\nb"})
    assert run.status == RunStatus.PAUSED, run.message
    assert [a.number for a in harness.runlog().attempts(run.run_id)] == [1]


def test_paused_runs_hold_no_execution_slot(harness: Harness, emulator: EmulatorServer) -> None:
    """With KLINGFLOW_MAX_RUNS=1, a paused run does not stop the next run from completing."""
    emulator.add_fault(FaultRule(action="fail_task", times=2))

    async def work(engine: Engine) -> list[RunRecord]:
        spec = load_workflow_text(VIDEO)
        first = await engine.start_run(spec, {})
        second = await engine.start_run(spec, {})
        third = await engine.start_run(spec, {})
        ids = [first.run_id, second.run_id, third.run_id]
        return await engine.wait(ids, timeout_seconds=60)

    runs = harness.session(work, max_runs=1)
    statuses = sorted(run.status.value for run in runs)
    assert statuses == ["completed", "paused", "paused"], [r.message for r in runs]


def test_a_download_redirected_to_a_private_host_is_refused(harness: Harness) -> None:
    """An allowed host that redirects to a private one: the hop is refused, never fetched."""
    with recorder() as inner, recorder(redirect_to=f"{inner.url}/secret.mp4") as outer:
        allowed = outer.url.removeprefix("http://")

        async def work(engine: Engine) -> RunRecord:
            spec = load_workflow_text(call(f"{outer.url}/video.mp4", node_type="download"))
            started = await engine.start_run(spec, {})
            [record] = await engine.wait([started.run_id], timeout_seconds=60)
            return record

        run = harness.session(work, allow_private_hosts=allowed)
        assert [r.path for r in outer.requests] == ["/video.mp4"]
        assert inner.requests == []
    assert run.status == RunStatus.PAUSED, run.message
    assert "loopback" in (run.message or "")


def test_unencodable_answers_are_stored_safely(harness: Harness) -> None:
    """An endpoint answering with a lone surrogate and NUL: the run completes and its stored
    output encodes as UTF-8 JSON (what every listing does), marked where text was lost."""
    body = b'{"text": "ok \\ud800 and \\u0000 end", "\\udfff": 1}'
    with recorder(body=body) as local:
        run = harness.run(call(f"{local.url}/x", extra="\n      allow_private_network: true"))
    assert run.status == RunStatus.COMPLETED, run.message
    [node] = harness.runlog().nodes(run.run_id)
    encoded = json.dumps(node.output, ensure_ascii=False).encode("utf-8")
    assert "ok ? and \ufffd end" in encoded.decode("utf-8")


def test_a_redirect_to_a_file_url_is_not_retried(tmp_path: Path) -> None:
    """A file host redirecting to file:// is a final DownloadError after one request."""
    with (
        recorder(redirect_to="file:///etc/passwd") as host,
        PiAPI(api_key="k", base_url="http://127.0.0.1:9") as client,
    ):
        with pytest.raises(DownloadError) as caught:
            client.download(f"{host.url}/video.mp4", f"{tmp_path}/")
        assert caught.value.retryable is False
        assert len(host.requests) == 1
