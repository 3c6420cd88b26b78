"""The web UI over HTTP: forms, CSRF, cross-site refusals, login, files and secrets."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import itsdangerous
import markupsafe
import openpyxl  # type: ignore[import-untyped]
import pytest
from pydantic import SecretStr

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.service.sessions import SESSION_COOKIE, session_key
from klingflow.service.views import NodeView, progress_of, run_view
from klingflow.settings import Settings
from klingflow.workflows.records import Attempt, NodeRun, NodeStatus, RunRecord, RunStatus

from ..loopback import loopback_client
from .conftest import API_TOKEN, WEBHOOK_SECRET, Service, StartService

FORM = """\
name: form
inputs:
  prompt: {type: string, required: true}
  seconds: {type: integer, default: 5, enum: [5, 10]}
  loud: {type: boolean, default: false}
  tags: {type: array, default: []}
nodes:
  - id: clip
    type: kling.video
    with: {prompt: "{{ inputs.prompt }}", duration: "{{ inputs.seconds }}"}
"""


def csrf(http: httpx.Client, path: str = "/workflows/form") -> str:
    page = http.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def post_form(service: Service, data: dict[str, str], **extra: str) -> httpx.Response:
    fields = {"csrf_token": csrf(service.http), **data, **extra}
    return service.http.post("/workflows/form/runs", data=fields)


@pytest.fixture
def ui(service: Service) -> Service:
    service.publish(FORM)
    return service


def test_the_form_starts_a_typed_run_and_redirects_to_it(
    ui: Service, emulator: EmulatorServer
) -> None:
    """Typed fields arrive typed: integer, boolean, JSON array."""
    response = post_form(ui, {"prompt": "a fox", "seconds": "10", "loud": "on", "tags": '["a"]'})
    assert response.status_code == 303
    run_id = response.headers["location"].removeprefix("/runs/")
    run = ui.finish(run_id)["run"]
    assert run["status"] == "completed"
    assert run["inputs"] == {"prompt": "a fox", "seconds": 10, "loud": True, "tags": ["a"]}
    assert emulator.tasks()[0]["input"]["duration"] == 10
    page = ui.http.get(f"/runs/{run_id}")
    assert "completed" in page.text
    assert 'data-poll-ms="0"' in page.text  # a finished run stops refreshing
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_refused_form_keeps_what_was_typed_and_starts_nothing(
    ui: Service, emulator: EmulatorServer
) -> None:
    """Each bad field gets its own message; the typed text comes back; nothing is paid."""
    response = post_form(ui, {"prompt": "", "seconds": "7", "tags": "[oops"})
    assert response.status_code == 422
    assert "prompt is required" in response.text
    assert "seconds must be one of 5, 10, got 7" in response.text
    assert "tags must be JSON" in response.text
    assert "[oops</textarea>" in response.text
    assert ui.http.get("/api/runs").json()["runs"] == []
    assert emulator.stats()["creates"] == 0


def test_the_estimate_button_prices_the_run_and_starts_nothing(
    ui: Service, emulator: EmulatorServer
) -> None:
    """Estimate cost keeps the form as typed and says what Start would spend; bad inputs
    get the same messages as a start."""
    typed = {"prompt": "a fox", "seconds": "10", "tags": '["a"]'}
    response = post_form(ui, typed, intent="estimate")
    assert response.status_code == 200
    assert re.search(r'data-estimate="total">\$1\.00<', response.text)
    assert "for 1 paid submission. Nothing was started." in response.text
    assert "a fox</textarea>" in response.text
    refused = post_form(ui, {"prompt": "", "seconds": "7"}, intent="estimate")
    assert refused.status_code == 422
    assert "prompt is required" in refused.text
    assert 'id="estimate"' not in refused.text
    assert ui.http.get("/api/runs").json()["runs"] == []
    assert emulator.stats()["creates"] == 0


def test_an_uploaded_csv_fills_an_array_input_typed_as_the_cli_rows(
    ui: Service, emulator: EmulatorServer
) -> None:
    """CSV cells named after a declared input are typed as that input (as `--rows` does);
    the rows come back as JSON with a preview and a price, and nothing starts."""
    text = "prompt,seconds,loud\na fox,10,true\na hen,5,false\n"
    response = ui.http.post(
        "/workflows/form/runs",
        data={"csrf_token": csrf(ui.http), "prompt": "a fox"},
        files={"tags__file": ("tags.csv", text.encode(), "text/csv")},
    )
    assert response.status_code == 200
    assert "2 rows</b> from <span" in response.text
    assert "tags.csv" in response.text
    rows = [
        {"prompt": "a fox", "seconds": 10, "loud": True},
        {"prompt": "a hen", "seconds": 5, "loud": False},
    ]
    assert str(markupsafe.escape(json.dumps(rows))) in response.text
    assert 'id="estimate"' in response.text
    assert ui.http.get("/api/runs").json()["runs"] == []
    assert emulator.stats()["creates"] == 0


def test_an_excel_sheet_gives_the_same_rows_as_its_csv_export(
    ui: Service, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An .xlsx upload reads its first sheet by header; numbers come as a CSV would write
    them, then typed as the declared inputs; blank rows are left out."""
    book = openpyxl.Workbook()
    sheet = book.active
    for row in (["prompt", "seconds", "loud"], ["a fox", 10, True], [None, None, None]):
        sheet.append(row)
    sheet.append(["a hen", 5.0, False])
    path = tmp_path / "tags.xlsx"
    book.save(path)
    response = ui.http.post(
        "/workflows/form/runs",
        data={"csrf_token": csrf(ui.http), "prompt": "a fox"},
        files={"tags__file": ("tags.xlsx", path.read_bytes(), "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    rows = [
        {"prompt": "a fox", "seconds": 10, "loud": True},
        {"prompt": "a hen", "seconds": 5, "loud": False},
    ]
    assert str(markupsafe.escape(json.dumps(rows))) in response.text
    assert emulator.stats()["creates"] == 0


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("shifted.csv", "prompt,slug\na,b,c\n", "shifted.csv line 2 has more cells than"),
        ("empty.csv", "prompt,slug\n", "file &#39;empty.csv&#39; has no rows"),
        ("rows.xls", "x", "takes a .csv, .xlsx, .jsonl, .json, .yaml, .yml file"),
        ("rows.xlsx", "not a zip", "rows.xlsx is not an Excel .xlsx file"),
        ("rows.csv", "prompt\n\xff\n", "rows.csv is not UTF-8 text"),
        ("rows.json", '{"a": 1}', "rows.json must hold a list of rows"),
    ],
)
def test_a_bad_upload_is_refused_on_its_field(
    ui: Service, emulator: EmulatorServer, name: str, body: str, message: str
) -> None:
    """A file that is not rows gets one message on its field, and nothing starts."""
    response = ui.http.post(
        "/workflows/form/runs",
        data={"csrf_token": csrf(ui.http), "prompt": "a fox"},
        files={"tags__file": (name, body.encode("latin-1"), "text/plain")},
    )
    assert response.status_code == 422
    assert message in response.text
    assert emulator.stats()["creates"] == 0


def test_a_double_submitted_form_starts_one_run(ui: Service) -> None:
    """The form's idempotency key maps a second post (double click, reload) to the same run."""
    page = ui.http.get("/workflows/form").text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key is not None
    first = post_form(ui, {"prompt": "a fox"}, idempotency_key=key.group(1))
    second = post_form(ui, {"prompt": "a fox"}, idempotency_key=key.group(1))
    assert first.headers["location"] == second.headers["location"]
    assert len(ui.http.get("/api/runs").json()["runs"]) == 1


def test_forms_without_the_csrf_token_are_refused(ui: Service) -> None:
    """A post without its session's token, or with another session's, changes nothing."""
    missing = ui.http.post("/workflows/form/runs", data={"prompt": "a fox"})
    assert missing.status_code == 403
    with loopback_client(ui.url) as other:
        foreign = csrf(other)  # a real token, of another browser's session
    csrf(ui.http)  # this browser has a session (and a token of its own) now
    forged = ui.http.post("/workflows/form/runs", data={"prompt": "x", "csrf_token": foreign})
    assert forged.status_code == 403
    assert ui.http.get("/api/runs").json()["runs"] == []


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, "CrossSiteRequest"),
        ({"Sec-Fetch-Site": "same-site"}, "CrossSiteRequest"),  # another port of localhost
        ({"Origin": "http://evil.test"}, "CrossSiteRequest"),  # a browser without Sec-Fetch
        ({"Host": "rebound.evil.test"}, "HostNotAllowed"),  # DNS rebinding
    ],
)
def test_what_a_web_page_could_send_is_refused(
    ui: Service, headers: dict[str, str], refusal: str
) -> None:
    """Another web site cannot drive a loopback service through a visitor's browser."""
    response = ui.http.post("/api/workflows/form/runs", json={"prompt": "a fox"}, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == refusal
    assert ui.http.get("/api/runs").json()["runs"] == []


def test_the_service_s_own_pages_and_other_apps_pass_the_guard(ui: Service) -> None:
    """Its own pages (same-origin), a typed URL (none) and non-browser apps are let through."""
    for headers in (
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": ui.url},
        {},
    ):
        response = ui.http.post("/api/workflows/form/runs", json={"prompt": "a"}, headers=headers)
        assert response.status_code == 201, headers
    assert ui.http.get("/", headers={"Host": "localhost"}).status_code == 200


def test_retry_skip_and_cancel_buttons_steer_the_run(ui: Service, emulator: EmulatorServer) -> None:
    """A failed generation pauses the run; Skip carries on; a finished run refuses Cancel."""
    emulator.add_fault(FaultRule(action="fail_task"))
    run_id = ui.start("form", {"prompt": "a fox"})
    assert ui.settle(run_id)["run"]["status"] == "paused"
    page = ui.http.get(f"/runs/{run_id}").text
    for shown in ("Retry", "Skip node", "TaskFailedError"):
        assert shown in page
    token = csrf(ui.http, f"/runs/{run_id}")
    skipped = ui.http.post(f"/runs/{run_id}/skip", data={"csrf_token": token})
    assert skipped.status_code == 303
    assert ui.finish(run_id)["run"]["status"] == "completed"
    refused = ui.http.post(f"/runs/{run_id}/cancel", data={"csrf_token": token})
    assert refused.status_code == 303
    assert "cancel refused" in ui.http.get(f"/runs/{run_id}").text


def test_run_files_stream_with_ranges_and_stay_in_the_run_folder(ui: Service) -> None:
    """Videos are served from the run folder (seekable); nothing outside it is."""
    run_id = ui.start("form", {"prompt": "a fox"})
    detail = ui.finish(run_id)
    path = detail["nodes"][0]["output"]["path"]
    name = path.rsplit("/", 1)[-1]
    assert f"/runs/{run_id}/files/{name}" in ui.http.get(f"/runs/{run_id}").text
    partial = ui.http.get(f"/runs/{run_id}/files/{name}", headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206
    assert len(partial.content) == 100
    for escape in ("%2e%2e/klingflow.sqlite", "..%2F..%2Fklingflow.sqlite", "%2Fetc%2Fpasswd"):
        missing = ui.http.get(f"/runs/{run_id}/files/{escape}")
        assert missing.status_code == 404, escape
        assert missing.json()["error"] == "FileNotFound"


def test_run_files_that_are_not_media_are_only_downloads(ui: Service, tmp_path: Path) -> None:
    """A page a download node saved in the run folder cannot run script on the UI's origin."""
    run_id = ui.start("form", {"prompt": "a fox"})
    folder = Path(ui.finish(run_id)["run"]["output_dir"])
    (folder / "page.html").write_text("<script>alert(1)</script>")
    (folder / "link").symlink_to(tmp_path / "klingflow.sqlite")
    page = ui.http.get(f"/runs/{run_id}/files/page.html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment")
    assert page.headers["content-security-policy"] == "sandbox"
    assert ui.http.get(f"/runs/{run_id}/files/link").status_code == 404  # leads outside


def test_secrets_are_never_rendered(
    start_service: StartService, emulator: EmulatorServer, api_key: str
) -> None:
    """A workflow that spells out the deployment's secrets shows none of them anywhere, not
    even a prefix of a long one; values under secret-looking keys are masked too."""
    service = start_service(api_token=API_TOKEN, chat_api_key="kf-chat-key-0b9e44")
    secrets = (api_key, WEBHOOK_SECRET, API_TOKEN, "kf-chat-key-0b9e44")
    padding = "x" * 150  # a graph parameter longer than a card shows
    leaky = (
        "name: leaky\n"
        f"description: uses {' and '.join(secrets)}\n"
        "inputs: {partner_token: {type: string}}\n"
        "nodes:\n"
        "  - id: note\n    type: set\n"
        f"    with: {{values: {{k: '{padding}{api_key}', s: '{WEBHOOK_SECRET}'}}}}\n"
    )
    service.publish(leaky)
    run_id = service.start("leaky", {"note": api_key, "partner_token": "tok-3f9a2c71"})
    service.finish(run_id)
    token = csrf(service.http, "/login")
    signed_in = service.http.post("/login", data={"csrf_token": token, "token": API_TOKEN})
    assert signed_in.status_code == 303
    paths = ("/", "/workflows", "/workflows/leaky", "/runs", f"/runs/{run_id}")
    responses = [service.http.get(path) for path in paths]
    assert [r.status_code for r in responses] == [200] * len(paths)
    assert "partner_token&#34;: &#34;***" in responses[-1].text  # the run's inputs, masked
    pages = [r.text for r in responses]
    pages.append(service.http.get("/api/workflows/leaky").text)
    pages.append(service.http.get("/runs/run-missing", headers={"Accept": "text/html"}).text)
    for text in pages:
        for secret in (*secrets, "tok-3f9a2c71"):
            assert secret[:12] not in text


def test_pages_need_a_login_when_a_token_is_set(start_service: StartService) -> None:
    """Beyond loopback (a token set): pages redirect to /login; the token signs in."""
    service = start_service(api_token=API_TOKEN)
    # No bearer header: a browser.
    browser = loopback_client(service.url)
    for path in (
        "/", "/workflows", "/runs", "/fragments/dashboard", "/runs/run-x/live", "/editor",
        "/runs/run-x/loops/each", "/runs/run-x/loops/each/items/0", "/runs/run-x/download.zip",
        "/runs/run-x/manifest.csv",
    ):  # fmt: skip
        response = browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    assert browser.get("/static/app.css").status_code == 200
    token = csrf(browser, "/login?next=/runs")
    wrong = browser.post("/login", data={"csrf_token": token, "token": "nope", "next": "/runs"})
    assert wrong.status_code == 401
    right = browser.post("/login", data={"csrf_token": token, "token": API_TOKEN, "next": "/runs"})
    assert right.status_code == 303
    assert right.headers["location"] == "/runs"
    assert browser.get("/runs").status_code == 200
    offsite = browser.post(
        "/login",
        data={"csrf_token": csrf(browser, "/runs"), "token": API_TOKEN, "next": "//evil.test"},
    )
    assert offsite.headers["location"] == "/"
    browser.close()


def test_a_login_lasts_seven_days_however_often_a_tab_polls(start_service: StartService) -> None:
    """The session cookie is re-signed on every response; the login still ends 7 days after
    the sign-in, not 7 days after the last poll of a tab left open."""
    service = start_service(api_token=API_TOKEN)
    signer = itsdangerous.TimestampSigner(session_key(Settings(api_token=SecretStr(API_TOKEN))))

    def signed_in(days_ago: float) -> httpx.Client:  # a cookie as a polling tab keeps it
        session = {"signed_in_at": time.time() - days_ago * 86_400}
        cookie = signer.sign(base64.b64encode(json.dumps(session).encode())).decode()
        return loopback_client(service.url, cookies={SESSION_COOKIE: cookie})

    with signed_in(6.9) as recent, signed_in(7.1) as stale:
        assert recent.get("/runs").status_code == 200
        expired = stale.get("/runs")
        assert expired.status_code == 303
        assert expired.headers["location"] == "/login?next=/runs"


def test_unknown_pages_answer_with_an_html_404(ui: Service) -> None:
    """A browser asking for a missing run gets a page that says so, not JSON."""
    response = ui.http.get("/runs/run-missing", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert "no run run-missing" in response.text


def test_the_dashboard_shows_tasks_in_flight_and_what_was_spent(
    ui: Service, emulator: EmulatorServer
) -> None:
    """While PiAPI works, its task is listed as active; once done, it counts as spent."""
    emulator.configure(time_scale=1.0, pending_seconds=0.0, processing_seconds=600.0)
    run_id = ui.start("form", {"prompt": "a slow fox"})
    live = ""
    for _ in range(200):
        live = ui.http.get("/fragments/dashboard").text
        if "accepted" in live:
            break
        time.sleep(0.05)
    [task] = emulator.tasks()
    assert task["task_id"] in live
    assert re.search(r'data-status="running">\s*1\s*<', live)
    emulator.configure(time_scale=1000.0)  # the clip is done at the next status check
    assert ui.finish(run_id)["run"]["status"] == "completed"
    finished = ui.http.get("/").text
    assert "No PiAPI task is running." in finished
    assert re.search(r'data-status="completed">\s*1\s*<', finished)
    assert re.search(r'data-spend="total">\$0\.50<', finished)


def test_the_service_fires_schedules_and_shows_them(ui: Service) -> None:
    """A published schedule starts runs in the service, one per tick, shown with its next tick."""
    ui.publish(
        "name: ticker\n"
        "inputs:\n  who: {type: string, required: true}\n"
        "nodes:\n  - {id: note, type: set, with: {values: {hello: '{{ inputs.who }}'}}}\n"
        "schedules:\n  - {cron: '* * * * * *', name: every_second, payload: {who: cron}}\n"
    )
    deadline = time.monotonic() + 20
    while len(runs := ui.http.get("/api/runs", params={"workflow": "ticker"}).json()["runs"]) < 2:
        assert time.monotonic() < deadline, "the schedule never fired twice"
        time.sleep(0.1)
    keys = [run["idempotency_key"] for run in runs]
    assert all(key.startswith("schedule:ticker:every_second:") for key in keys)
    assert len(set(keys)) == len(keys)
    assert all(run["trigger"] == {"who": "cron"} for run in runs)
    page = ui.http.get("/workflows/ticker").text
    assert "every_second" in page
    assert "* * * * * *" in page
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", page)
    listing = ui.http.get("/workflows").text
    assert re.search(r"\d\d:\d\d:\d\d UTC</span>", listing)


def test_an_uncertain_submission_is_settled_with_its_task_id_from_the_page(
    start_service: StartService, emulator: EmulatorServer
) -> None:
    """PiAPI took the task but its answer was lost (no webhooks): the page asks for the task
    id; given it, Retry finishes the run without paying again."""
    service = start_service(public_url=None)
    service.publish(FORM)
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    run_id = service.start("form", {"prompt": "a fox"})
    assert service.settle(run_id)["run"]["status"] == "paused"
    page = service.http.get(f"/runs/{run_id}").text
    assert 'name="task_id"' in page
    assert "uncertain" in page
    [intent] = service.http.get("/api/tasks", params={"run_id": run_id}).json()["tasks"]
    assert f'id="uncertain-{intent["intent_id"]}"' in page
    assert re.search(r"data-window>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC to ", page)
    assert "With the prompt</dt><dd>a fox<" in page
    assert "none: this service has no public URL" in page
    [task] = emulator.tasks()
    retried = service.http.post(
        f"/runs/{run_id}/retry",
        data={"csrf_token": csrf(service.http, f"/runs/{run_id}"), "task_id": task["task_id"]},
    )
    assert retried.status_code == 303
    assert service.finish(run_id)["run"]["status"] == "completed"
    assert emulator.stats()["creates"] == 1


def test_retry_all_paused_runs_from_the_workflow_page(
    ui: Service, emulator: EmulatorServer
) -> None:
    """Two runs pause on failed generations; one click retries both, and both complete."""
    emulator.add_fault(FaultRule(action="fail_task", times=2))
    run_ids = [ui.start("form", {"prompt": f"fox {n}"}) for n in range(2)]
    assert [ui.settle(run_id)["run"]["status"] for run_id in run_ids] == ["paused"] * 2
    page = ui.http.get("/workflows/form").text
    assert "2 paused runs of this workflow" in page
    response = ui.http.post(
        "/workflows/form/retry-paused", data={"csrf_token": csrf(ui.http, "/workflows/form")}
    )
    assert response.status_code == 303
    assert "retrying 2 paused runs" in ui.http.get("/workflows/form").text
    assert [ui.finish(run_id)["run"]["status"] for run_id in run_ids] == ["completed"] * 2


MANY = """\
name: many
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 20}
    nodes:
      - id: note
        type: set
        with: {values: {text: "{{ item.title }}"}}
"""


def test_a_loop_of_120_items_is_paged_and_filtered(service: Service) -> None:
    """The items page shows 50 rows a page, in item order, with labels; a filter narrows."""
    service.publish(MANY)
    rows = [{"title": f"row {n:03d}"} for n in range(120)]
    run_id = service.start("many", {"rows": rows})
    assert service.finish(run_id)["run"]["status"] == "completed"
    run_page = service.http.get(f"/runs/{run_id}").text
    assert "<b>120 / 120</b> items done" in run_page
    first = service.http.get(f"/runs/{run_id}/loops/each")
    assert first.text.count('<tr id="item-') == 50
    assert "row 000" in first.text
    assert "row 050" not in first.text
    assert "page 1 of 3 (120 items)" in first.text
    last = service.http.get(f"/runs/{run_id}/loops/each", params={"page": 3}).text
    assert last.count('<tr id="item-') == 20
    assert "row 119" in last
    failed = service.http.get(f"/runs/{run_id}/loops/each", params={"status": "failed"}).text
    assert failed.count('<tr id="item-') == 0
    detail = service.http.get(f"/runs/{run_id}/loops/each/items/41").text
    assert "Item 42 of 120" in detail
    assert "row 041" in detail
    assert service.http.get(f"/runs/{run_id}/loops/each/items/120").status_code == 404
    assert service.http.get(f"/runs/{run_id}/loops/nope").status_code == 404


LABELLED = """\
name: labelled
inputs:
  rows: {type: array, required: true}
  campaign: {type: string, default: spring}
nodes:
  - id: each
    type: loop
    label: "{{ inputs.campaign }} #{{ loop.number }}: {{ item.tag | upper }}"
    with: {items: "{{ inputs.rows }}", concurrency: 5}
    nodes:
      - id: clip
        type: kling.video
        with: {prompt: "{{ item.title }}", download: false}
"""


def test_a_loop_label_template_names_its_items_in_the_table_and_the_manifest(
    service: Service,
) -> None:
    """`label:` renders per item (item, loop, inputs) in the items table, an item's page and
    the manifest; a label that cannot render falls back to the item's own fields."""
    service.publish(LABELLED)
    rows = [{"title": "a", "tag": "fox"}, {"title": "b", "tag": "owl"}, {"title": "no tag"}]
    run_id = service.start("labelled", {"rows": rows})
    assert service.finish(run_id)["run"]["status"] == "completed"
    table = service.http.get(f"/runs/{run_id}/loops/each").text
    assert "spring #1: FOX" in table
    assert "spring #2: OWL" in table
    assert "no tag" in table  # item.tag is undefined for it: its own title instead
    assert "spring #2: OWL" in service.http.get(f"/runs/{run_id}/loops/each/items/1").text
    manifest = service.http.get(f"/runs/{run_id}/manifest.json").json()
    assert [row["item"] for row in manifest] == ["spring #1: FOX", "spring #2: OWL", "no tag"]


LOOP3 = """\
name: three
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.prompts }}", concurrency: 3}
    nodes:
      - id: clip
        type: kling.video
        with: {prompt: "{{ item }}", download: false}
"""


def test_skipping_the_selected_failed_item_finishes_the_loop_without_paying_again(
    service: Service, emulator: EmulatorServer
) -> None:
    """Skip selected marks the failed item skipped; the loop completes; creates stays 3."""
    service.publish(LOOP3)
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run_id = service.start("three", {"prompts": ["a fox", "a hen", "a cat"]})
    assert service.settle(run_id)["run"]["status"] == "paused"
    path = f"/runs/{run_id}/loops/each"
    listed = service.http.get(path, params={"status": "failed"}).text
    [index] = re.findall(r'name="item" value="(\d+)"', listed)
    response = service.http.post(
        f"{path}/items",
        data={"csrf_token": csrf(service.http, path), "item": index, "action": "skip"},
    )
    assert response.status_code == 303
    run = service.finish(run_id)["run"]
    assert run["status"] == "completed"
    assert emulator.stats()["creates"] == 3
    after = service.http.get(path, params={"status": "skipped"}).text
    assert f'<tr id="item-{index}"' in after


def test_the_manifest_names_each_rows_task_cost_and_status(
    service: Service, emulator: EmulatorServer
) -> None:
    """CSV and JSON manifests give row -> task id, cost, status, for a spreadsheet to take."""
    service.publish(LOOP3)
    run_id = service.start("three", {"prompts": ["a fox", "a hen", "a cat"]})
    assert service.finish(run_id)["run"]["status"] == "completed"
    rows = service.http.get(f"/runs/{run_id}/manifest.json").json()
    assert [(r["row"], r["item"], r["status"]) for r in rows] == [
        (1, "a fox", "succeeded"),
        (2, "a hen", "succeeded"),
        (3, "a cat", "succeeded"),
    ]
    by_prompt = {t["input"]["prompt"]: t["task_id"] for t in emulator.tasks()}
    assert [r["task_id"] for r in rows] == [by_prompt[p] for p in ("a fox", "a hen", "a cat")]
    assert all(r["cost_usd"] == "0.5" for r in rows)
    text = service.http.get(f"/runs/{run_id}/manifest.csv")
    assert text.headers["content-type"].startswith("text/csv")
    assert text.text.splitlines()[0] == "row,item,node,status,task_id,file,cost_usd"
    assert text.text.splitlines()[1].startswith("1,a fox,each[0].clip,succeeded,")


def test_the_login_page_does_not_claim_the_service_listens_beyond_loopback(
    start_service: StartService,
) -> None:
    """A token set on 127.0.0.1 asks for it without saying the service is exposed."""
    service = start_service(api_token=API_TOKEN)
    login = httpx.get(f"{service.url}/login").text
    assert "beyond loopback" not in login
    assert "KLINGFLOW_API_TOKEN" in login


def test_small_things_users_saw(ui: Service, emulator: EmulatorServer) -> None:
    """HEAD on a video answers; versions read as numbers with dates; a paused run says its
    error once."""
    ui.publish(FORM.replace("seconds: {type: integer", "seconds: {description: s, type: integer"))
    run_id = ui.start("form", {"prompt": "a fox"})
    path = ui.finish(run_id)["nodes"][0]["output"]["path"]
    head = ui.http.head(f"/runs/{run_id}/files/{path.rsplit('/', 1)[-1]}")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) > 0
    assert head.content == b""
    listing = ui.http.get("/workflows").text
    assert "version 2</span>" in listing
    assert time.strftime("%Y-%m-%d", time.gmtime()) in listing

    emulator.add_fault(FaultRule(action="fail_task", times=1))
    paused = ui.start("form", {"prompt": "a hen"})
    assert ui.settle(paused)["run"]["status"] == "paused"
    page = ui.http.get(f"/runs/{paused}").text
    assert page.count("failed to generate video") == 1, "the error is said more than once"
    assert "the run paused here (the message above)" in page


def test_the_workflow_graph_shows_loops_conditions_and_retry_policies(service: Service) -> None:
    """The SVG graph draws a loop as a group, an `if:` on its arrow, a node's own retry."""
    examples = Path(__file__).parents[2] / "examples"
    service.publish((examples / "batch-from-csv.yaml").read_text())
    service.publish((examples / "seed-action.yaml").read_text())
    batch = service.http.get("/workflows/batch-from-csv").text
    assert re.search(r'class="gbox group s-none" data-node="each"', batch)
    assert "retry ×5, regenerates failed" not in batch  # the workflow says no regenerating
    assert "retry ×5" in batch
    seed = service.http.get("/workflows/seed-action").text
    assert "if nodes.wait.output.video_url is not none" in seed
    assert 'href="#gnode-save"' in seed


def test_the_editor_works_without_javascript_and_never_publishes_a_broken_file(
    service: Service,
) -> None:
    """Check shows problems with lines; Publish of a broken file stores nothing (422); a
    fixed file is published and the new workflow's page follows."""
    broken = FORM.replace("name: form", "name: drafted").replace("{{ inputs.seconds }}", "70")
    token = csrf(service.http, "/editor")
    checked = service.http.post(
        "/editor", data={"csrf_token": token, "source": broken, "intent": "check"}
    )
    assert checked.status_code == 200
    assert re.search(r'data-line="(\d+)"', checked.text)
    assert "must be 3 to 15 seconds" in checked.text
    refused = service.http.post(
        "/editor", data={"csrf_token": token, "source": broken, "intent": "publish"}
    )
    assert refused.status_code == 422
    assert service.http.get("/api/workflows").json()["workflows"] == []
    fixed = broken.replace('duration: "70"', "duration: 5")
    published = service.http.post(
        "/editor",
        data={"csrf_token": token, "source": fixed, "intent": "publish", "sample": "{}"},
    )
    assert published.status_code == 303, published.text
    assert published.headers["location"] == "/workflows/drafted"
    assert [w["name"] for w in service.http.get("/api/workflows").json()["workflows"]] == [
        "drafted"
    ]
    priced = service.http.post(
        "/fragments/editor-check",
        data={"csrf_token": token, "source": fixed, "sample": '{"prompt": "a fox"}'},
    )
    assert "$0.50" in priced.text
    unpriced = service.http.post(
        "/fragments/editor-check", data={"csrf_token": token, "source": fixed, "sample": "[1]"}
    )
    assert "cannot price these sample inputs" in unpriced.text


def test_a_retried_node_s_time_is_its_attempts_added_up() -> None:
    """8 s failing, a pause for the user, then 2 s succeeding: the node took 10 s, not the
    0.0 s between the retry's start and its end, nor the pause."""
    node = NodeRun(
        run_id="run-1", epoch=0, node_path="clip", node_id="clip", node_type="kling.video",
        item_index=None, status=NodeStatus.SUCCEEDED, inputs={}, output={}, error=None,
        attempts=2, task_id=None, cost_usd=None, started_at=1000.0, finished_at=1000.0,
    )  # fmt: skip
    attempts = [
        Attempt("clip", 1, started_at=100.0, ended_at=108.0, error={}, retry_in_seconds=None),
        Attempt("clip", 2, started_at=998.0, ended_at=1000.0, error=None, retry_in_seconds=None),
    ]
    assert NodeView(node, attempts, []).seconds == 10.0
    running = NodeView(replace(node, status=NodeStatus.RUNNING), attempts, [])
    assert running.seconds is None  # "started ... ago" instead of a stale finish time


def test_progress_reads_x_of_n_spend_against_the_estimate_and_time_left() -> None:
    """8 of 20 items done in 40 s while running: 12 left at 5 s each is 60 s; none paused."""
    run = RunRecord(
        run_id="run-1", idempotency_key=None, workflow_name="batch", workflow_hash="h",
        workflow={}, source_path=None, trigger={}, inputs={}, status=RunStatus.RUNNING,
        message=None, paused_node=None, epoch=0, outputs=None, output_dir="/tmp",
        budget_usd=None, reserved_usd=Decimal(0), spent_usd=Decimal("4"),
        estimated_usd=Decimal("6"), created_at=1000.0, updated_at=1040.0, finished_at=None,
    )  # fmt: skip
    loop = NodeRun(
        run_id="run-1", epoch=0, node_path="each", node_id="each", node_type="loop",
        item_index=None, status=NodeStatus.RUNNING, inputs={"items": list(range(20))},
        output=None, error=None, attempts=0, task_id=None, cost_usd=None, started_at=1000.0,
        finished_at=None,
    )  # fmt: skip
    counts = {"each": {"succeeded": 8, "running": 5, "queued": 7}}
    view = run_view(run, [loop], [], [], item_counts=counts)
    progress = progress_of(view, node_count=1, estimate_usd=Decimal("10"), now=1040.0)
    assert (progress.done, progress.total, progress.unit) == (8, 20, "items")
    assert progress.spent_share == 0.4
    assert progress.eta_seconds == 60.0
    paused = run_view(replace(run, status=RunStatus.PAUSED), [loop], [], [], item_counts=counts)
    assert progress_of(paused, node_count=1, estimate_usd=None, now=1040.0).eta_seconds is None
