"""The editor shows a secret written into a workflow file as `***`; saving must not publish
`***` in its place (issue #15): kept lines get their secret back, an edited line that
still holds `***` is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from playwright.sync_api import Page, expect

from .conftest import WEBHOOK_SECRET, StartService

NOTIFY = f"""\
name: notify
nodes:
  - id: tell
    type: http.request
    with:
      url: https://hooks.example.com/done
      method: POST
      headers: {{X-Hook: "{WEBHOOK_SECRET}"}}
"""


def editor_text(page: Page) -> str:
    text: str = page.evaluate("document.getElementById('editor-form').editor.getValue()")
    return text


def set_editor(page: Page, text: str) -> None:
    page.evaluate("(text) => document.getElementById('editor-form').editor.setValue(text)", text)


def stored_sources(database: Path) -> list[str]:
    """Every published text of `notify`, oldest first, as the database holds it."""
    with sqlite3.connect(database) as db:
        query = "select source from kf_workflows where name = 'notify' order by created_at"
        return [row[0] for row in db.execute(query)]


def test_saving_from_the_editor_keeps_a_masked_secret(
    start_service: StartService, page: Page, tmp_path: Path
) -> None:
    """Edit another line and publish: the new version has the secret, not `***`. Edit the
    masked line itself and publish: refused on that line, nothing published."""
    service = start_service()
    service.publish(NOTIFY)
    page.goto(f"{service.url}/editor?workflow=notify")
    expect(page.locator(".CodeMirror")).to_be_visible()
    shown = editor_text(page)
    assert 'X-Hook: "***"' in shown
    assert WEBHOOK_SECRET not in page.content()

    set_editor(page, shown.replace("method: POST", "method: PUT"))
    expect(page.locator("#problems-none")).to_contain_text("notify: 1 node")
    page.click("button:text('Publish')")
    expect(page.locator(".flash")).to_contain_text("published version 2 of notify")
    latest = stored_sources(tmp_path / "klingflow.sqlite")[-1]
    assert "method: PUT" in latest
    assert f'X-Hook: "{WEBHOOK_SECRET}"' in latest
    assert "***" not in latest

    page.goto(f"{service.url}/editor?workflow=notify")
    expect(page.locator(".CodeMirror")).to_be_visible()
    set_editor(page, editor_text(page).replace('X-Hook: "***"', 'X-Token: "***"'))
    problems = page.locator("#problems li")
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("line 8")
    expect(problems.first).to_contain_text("where the published file has a secret")
    # Publish, as the form posts it (a 422 page would count as a console error here)
    form: dict[str, str | float | bool] = {
        "csrf_token": page.input_value("input[name=csrf_token]"),
        "editing": "notify",
        "source": editor_text(page),
        "sample": "",
        "intent": "publish",
    }
    refused = page.request.post(f"{service.url}/editor", form=form)
    assert refused.status == 422
    assert "type the secret again" in refused.text()
    assert WEBHOOK_SECRET not in refused.text()
    assert len(stored_sources(tmp_path / "klingflow.sqlite")) == 2


def test_posting_back_the_api_s_masked_text_keeps_the_secret(
    start_service: StartService, tmp_path: Path
) -> None:
    """`GET /api/workflows/{name}` shows the secret as `***`; a client that edits another line
    and posts the text back publishes the secret, and one that edits the masked line itself
    (still `***`) gets a 422 naming that line, and nothing is published."""
    service = start_service()
    service.publish(NOTIFY)
    shown = service.http.get("/api/workflows/notify").json()["latest"]["source"]
    assert 'X-Hook: "***"' in shown

    service.publish(shown.replace("method: POST", "method: PUT"))
    latest = stored_sources(tmp_path / "klingflow.sqlite")[-1]
    assert "method: PUT" in latest
    assert f'X-Hook: "{WEBHOOK_SECRET}"' in latest

    edited = shown.replace('X-Hook: "***"', 'X-Hook: "***", X-Other: "1"')
    refused = service.http.post("/api/workflows", content=edited)
    assert refused.status_code == 422
    assert "where the published file has a secret" in refused.text
    assert len(stored_sources(tmp_path / "klingflow.sqlite")) == 2
