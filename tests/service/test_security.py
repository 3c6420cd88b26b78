"""The API token, and where the service agrees to listen."""

from __future__ import annotations

import pytest
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from klingflow.cli.serve import serve
from klingflow.service.security import check_bind, is_loopback
from klingflow.settings import Settings

from ..loopback import loopback_client
from .conftest import API_TOKEN, CLIP, StartService


def test_token_is_required_on_api_and_trigger_routes(start_service: StartService) -> None:
    """With KLINGFLOW_API_TOKEN set, /api and /hooks/{workflow} need the bearer token."""
    service = start_service(api_token=API_TOKEN)
    with loopback_client(service.url) as anonymous:
        assert anonymous.get("/api/runs").status_code == 401
        wrong = anonymous.get("/api/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "Unauthorized"
        assert anonymous.post("/api/workflows", content=CLIP).status_code == 401
        assert anonymous.post("/hooks/clip", json={"prompt": "a"}).status_code == 401
        # PiAPI's receiver has its own secret instead of the token.
        assert anonymous.post("/hooks/piapi", content=b"{}").status_code == 401
        assert anonymous.get("/openapi.json").status_code == 200
    assert service.http.get("/api/runs").status_code == 200
    assert service.publish()["name"] == "clip"
    assert service.http.post("/hooks/clip", json={"prompt": "a"}).status_code == 201
    assert API_TOKEN not in service.http.get("/api/runs").text


def test_openapi_documents_the_routes(start_service: StartService) -> None:
    """The OpenAPI schema lists every route with typed responses."""
    service = start_service()
    paths = service.http.get("/openapi.json").json()["paths"]
    for path in (
        "/api/workflows",
        "/api/workflows/{name}",
        "/api/workflows/{name}/runs",
        "/api/workflows/{name}/retry-paused",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/retry",
        "/api/runs/{run_id}/skip",
        "/api/runs/{run_id}/cancel",
        "/api/tasks",
        "/api/spend",
        "/hooks/piapi",
        "/hooks/{workflow}",
    ):
        assert path in paths, path
    run_schema = paths["/api/runs/{run_id}"]["get"]["responses"]["200"]
    assert run_schema["content"]["application/json"]["schema"]["$ref"].endswith("RunDetailPublic")


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_only_loopback_hosts_count_as_loopback(host: str, expected: bool) -> None:
    """Loopback addresses and `localhost` are private; every other host is exposed."""
    assert is_loopback(host) is expected


def test_exposed_host_needs_a_token() -> None:
    """Listening beyond loopback is refused without a token and allowed with one."""
    with pytest.raises(ValueError, match="KLINGFLOW_API_TOKEN"):
        check_bind("0.0.0.0", Settings(api_token=None))
    check_bind("0.0.0.0", Settings(api_token=SecretStr(API_TOKEN * 2)))  # >= 32 characters
    check_bind("127.0.0.1", Settings(api_token=None))


def test_a_blank_secret_setting_is_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """`KLINGFLOW_API_TOKEN=` (or spaces) is no token, not an empty one every caller knows:
    the service still refuses to listen beyond loopback. Blank webhook secrets likewise."""
    monkeypatch.setenv("KLINGFLOW_API_TOKEN", "")
    monkeypatch.setenv("KLINGFLOW_WEBHOOK_SECRET", "  ")
    settings = Settings()
    assert settings.api_token is None
    assert settings.webhook_secret is None
    with pytest.raises(ValueError, match="KLINGFLOW_API_TOKEN"):
        check_bind("0.0.0.0", settings)


def test_the_public_url_may_end_with_a_slash() -> None:
    """PiAPI is sent `<public url>/hooks/piapi` either way, never `//hooks/piapi`."""
    assert Settings(public_url="https://kf.example.org/").public_url == "https://kf.example.org"


def test_serve_refuses_an_exposed_host_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """`klingflow serve --host 0.0.0.0` without a token exits 2 before listening."""
    monkeypatch.delenv("KLINGFLOW_API_TOKEN", raising=False)
    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, ["--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "KLINGFLOW_API_TOKEN" in result.output
