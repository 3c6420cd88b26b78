"""The web UI in Debian's Chromium: start a run from the form, watch it, retry a failure.

Screenshots of every step are kept in test-artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import av
from playwright.sync_api import Page, expect

from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import API_TOKEN, DOCS_IMAGES, DOCS_SHOTS, StartService, shoot

STUDIO = """\
name: studio
description: One Kling clip from a prompt, downloaded into the run folder.
inputs:
  prompt: {type: string, required: true, description: What happens in the clip.}
  duration: {type: integer, enum: [5, 10], default: 5}
  aspect_ratio: {type: string, enum: ["16:9", "9:16", "1:1"], default: "16:9"}
nodes:
  - id: clip
    type: kling.video
    with:
      prompt: "{{ inputs.prompt }}"
      duration: "{{ inputs.duration }}"
      aspect_ratio: "{{ inputs.aspect_ratio }}"
  - id: done
    type: set
    with:
      values: {path: "{{ nodes.clip.output.path }}"}
"""

PLAYS = """(video) => new Promise((resolve) => {
    video.muted = true;
    const check = () => video.currentTime > 0 ? resolve(video.videoWidth) : null;
    video.addEventListener("timeupdate", check);
    video.play().catch(() => resolve(-1));
    setTimeout(() => resolve(-2), 10000);
})"""
"""Resolves with the video's width once it has really played (-1/-2: it could not)."""


def expect_playable(page: Page) -> None:
    video = page.locator("#media video").first
    expect(video).to_be_visible()
    assert video.evaluate(PLAYS) > 0, "the video did not play"


def start_from_form(page: Page, url: str, prompt: str, *, estimate_first: bool = False) -> None:
    page.goto(f"{url}/workflows/studio")
    expect(page.locator("#graph")).to_contain_text("kling.video")
    page.fill("#in-prompt", prompt)
    page.select_option("#in-duration", label="10")
    if estimate_first:  # the price comes back with the form as typed
        page.click("text=Estimate cost")
        expect(page.locator("#estimate")).to_contain_text("$1.00 for 1 paid submission")
        expect(page.locator("#in-prompt")).to_have_value(prompt)
        shoot(page, "workflow-estimate")
    page.click("text=Start run")
    expect(page).to_have_url(re.compile(r"/runs/run-[0-9a-f]+$"))


def test_start_a_run_from_the_form_and_watch_it_finish(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """The form prices a run, then starts it; the page updates itself until the video plays."""
    service = start_service()
    service.publish(STUDIO)
    page.goto(f"{service.url}/workflows/studio")
    shoot(page, "workflow")
    start_from_form(page, service.url, "a paper boat on a rainy street", estimate_first=True)
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#timeline")).to_contain_text("clip")
    expect_playable(page)
    [task] = emulator.tasks()
    assert task["input"]["duration"] == 10
    assert task["input"]["prompt"] == "a paper boat on a rainy street"
    shoot(page, "run-completed")
    page.goto(service.url)
    expect(page.locator('[data-status="completed"]')).to_have_text("1")
    shoot(page, "dashboard")
    page.goto(f"{service.url}/workflows")
    shoot(page, "workflows")


def test_a_failed_node_is_retried_with_one_click(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """PiAPI fails the generation once: the run pauses with the error; Retry finishes it."""
    service = start_service()
    service.publish(STUDIO)
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    start_from_form(page, service.url, "a lighthouse at dusk")
    expect(page.locator("#summary .badge")).to_have_text("paused", timeout=30_000)
    expect(page.locator("#timeline .node-error")).to_contain_text("TaskFailedError")
    shoot(page, "run-paused")
    page.click("button:text('Retry')")
    expect(page.locator(".flash")).to_contain_text("retrying")
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    expect_playable(page)
    assert emulator.stats()["creates"] == 2  # the failed task, then one new task
    page.locator("#node-clip summary").click()
    attempts = page.locator("#node-clip .attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.first).to_contain_text("TaskFailedError")
    expect(attempts.last).to_contain_text("ok")
    shoot(page, "run-retried")


SEED_ACTION = (Path(__file__).parents[2] / "examples" / "seed-action.yaml").read_text()


def test_retrying_a_failed_task_submits_a_new_one_shown_with_its_estimate(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """The seed pauses on `wait` when PiAPI fails the task; Retry says it submits a new task
    and what it costs, and the emulator's creates goes up by exactly one."""
    service = start_service()
    service.publish(SEED_ACTION)
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run_id = service.start("seed-action", {"prompt": "a red fox in the snow"})
    assert service.settle(run_id)["run"]["status"] == "paused"
    assert emulator.stats()["creates"] == 1
    page.goto(f"{service.url}/runs/{run_id}")
    graph = page.locator("#run-flow")
    expect(graph.locator("[data-node=generate]")).to_have_attribute("data-status", "succeeded")
    expect(graph.locator("[data-node=wait]")).to_have_attribute("data-status", "failed")
    expect(graph.locator("[data-node=save]")).not_to_have_attribute("data-status", "succeeded")
    expect(graph).to_contain_text("if nodes.wait.output.video_url is not none")
    expect(page.locator("#resubmit-note")).to_contain_text("not charged")
    retry = page.locator("#actions button.primary")
    expect(retry).to_have_text("Retry with 1 new task ($0.26)")
    expect(page.locator("#actions")).to_contain_text("Retry from start")
    shoot(page, "run-failed-task")
    graph.locator("[data-node=wait]").click()  # the box opens the node's detail
    expect(page).to_have_url(re.compile(r"#node-wait$"))
    retry.click()
    expect(page.locator(".flash")).to_contain_text("1 new PiAPI task (est. $0.26)")
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    expect(graph.locator("[data-node=save]")).to_have_attribute("data-status", "succeeded")
    expect(page.locator(".flash")).to_have_count(0)  # "retrying" went with the state it named
    assert emulator.stats()["creates"] == 2
    expect(page.locator("#submissions tbody tr")).to_have_count(2)
    expect(page.locator("#submissions")).to_contain_text("the retry submits a new task")


def test_retry_from_start_runs_every_node_again(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """ "Retry from start" (the CLI's --from-start) asks first, then re-runs the whole run."""
    service = start_service()
    service.publish(SEED_ACTION)
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run_id = service.start("seed-action", {"prompt": "a heron at dawn"})
    assert service.settle(run_id)["run"]["status"] == "paused"
    page.goto(f"{service.url}/runs/{run_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:text('Retry from start')")
    expect(page.locator(".flash")).to_contain_text("retrying from the start")
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#summary")).to_contain_text("Restarts")
    assert emulator.stats()["creates"] == 2


BATCH = """\
name: batch
description: One Kling clip per row of a spreadsheet.
inputs:
  rows: {type: array, required: true, description: "Rows with a prompt and a slug."}
  duration: {type: integer, enum: [5, 10], default: 5}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 5}
    nodes:
      - id: video
        type: kling.video
        with:
          prompt: "{{ item.prompt }}"
          duration: "{{ item.duration | default(inputs.duration) }}"
          name: "{{ loop.number }}-{{ item.slug }}.mp4"
"""


def write_csv(path: Path, count: int) -> Path:
    lines = ["prompt,slug,duration"]
    lines += [f"a paper lantern number {n} drifting up,lantern-{n},5" for n in range(1, count + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_csv_of_20_rows_is_previewed_and_priced_per_node_before_anything_is_paid(
    start_service: StartService, emulator: EmulatorServer, page: Page, tmp_path: Path
) -> None:
    """Uploading a CSV for an array input shows its first rows, the count and the estimate per
    node; nothing is submitted until Start run, which then makes exactly 20 tasks."""
    service = start_service()
    service.publish(BATCH)
    page.goto(f"{service.url}/workflows/batch")
    page.set_input_files("#file-rows", str(write_csv(tmp_path / "lanterns.csv", 20)))
    page.click("text=Start run")  # a file always comes back for a look first
    preview = page.locator("#preview-rows")
    expect(preview).to_contain_text("20 rows from lanterns.csv, the first 5 shown")
    expect(preview.locator("tbody tr")).to_have_count(5)
    expect(preview.locator("thead")).to_contain_text("prompt")
    expect(preview.locator("tbody tr").first).to_contain_text("lantern-1")
    line = page.locator("#estimate .breakdown tbody tr")
    expect(line).to_have_count(1)
    expect(line).to_contain_text("each[*].video")
    expect(line).to_contain_text("20")
    expect(page.locator("#estimate [data-estimate=total]")).to_have_text("$10.00")
    shoot(page, "workflow-csv-preview")
    assert emulator.stats()["creates"] == 0

    emulator.add_fault(FaultRule(action="fail_task", times=1))  # one of the 20 fails
    page.click("text=Start run")
    expect(page).to_have_url(re.compile(r"/runs/run-[0-9a-f]+$"))
    run_url = page.url
    expect(page.locator("#summary .badge")).to_have_text("paused", timeout=60_000)
    expect(page.locator("[data-progress=each]")).to_have_text("19 / 20 items done")
    expect(page.locator("[data-progress=run]")).to_have_text("19 / 20")
    expect(page.locator("[data-spend]")).to_have_text("$9.50 spent of $10.00 estimated")
    assert emulator.stats()["creates"] == 20
    assert {t["input"]["duration"] for t in emulator.tasks()} == {5}
    shoot(page, "run-batch-paused")

    loop_box = page.locator("#run-flow [data-node=each]")
    expect(loop_box).to_contain_text("19 / 20 items")
    expect(page.locator("#run-flow [data-node=video]")).to_have_attribute("data-status", "failed")
    page.click("text=Items table")
    rows = page.locator("#items-table tbody tr")
    expect(rows).to_have_count(20)
    expect(rows.nth(6)).to_contain_text("a paper lantern number 7 drifting up")
    expect(page.locator("#items-table video")).to_have_count(19)
    shoot(page, "run-items")
    page.click("#item-6 a.label")
    expect(page.locator("h1")).to_contain_text("Item 7 of 20")
    expect(page.locator("#item-value")).to_contain_text("lantern-7")
    expect(page.locator("#item-nodes")).to_contain_text("Resolved inputs")
    shoot(page, "run-item")
    page.go_back()

    page.click(".filters >> text=failed")
    expect(rows).to_have_count(1)
    rows.first.locator("input[type=checkbox]").check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Retry selected")
    expect(page.locator(".flash")).to_contain_text("retrying 1 item, skipped 0")
    page.goto(run_url)
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=60_000)
    expect(page.locator("[data-progress=each]")).to_have_text("20 / 20 items done")
    assert emulator.stats()["creates"] == 21  # exactly one new submission, for that item

    with page.expect_download() as download:
        page.click("text=Download all (zip)")
    archive = zipfile.ZipFile(download.value.path())
    videos = sorted(n for n in archive.namelist() if n.endswith(".mp4"))
    assert len(videos) == 20
    for name in videos:
        with av.open(io.BytesIO(archive.read(name)), mode="r") as container:
            assert next(container.decode(video=0)).width > 0, f"{name} does not play"
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [row["row"] for row in manifest] == [str(n) for n in range(1, 21)]
    assert {row["status"] for row in manifest} == {"succeeded"}
    assert sorted(row["file"] for row in manifest) == videos
    tasks = {t["task_id"] for t in emulator.tasks()}
    assert {row["task_id"] for row in manifest} <= tasks
    assert manifest[6]["item"] == "a paper lantern number 7 drifting up"
    shoot(page, "run-batch-completed")


def test_an_uncertain_submission_is_settled_with_a_task_id_confirmed_at_piapi(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """The answer to the create request is lost: the page says where to look (intent, time
    window, prompt, webhook); a made-up task id is refused, the real one settles the run and
    nothing is paid twice."""
    service = start_service(public_url=None)  # no webhook to settle it by itself
    service.publish(STUDIO)
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    run_id = service.start("studio", {"prompt": "a kettle on a stove"})
    assert service.settle(run_id)["run"]["status"] == "paused"
    page.goto(f"{service.url}/runs/{run_id}")
    advice = page.locator("#actions .uncertain")
    expect(advice).to_contain_text("Look for a task created")
    expect(advice).to_contain_text("a kettle on a stove")
    expect(advice).to_contain_text(" UTC to ")
    shoot(page, "run-uncertain")
    page.fill("input[name=task_id]", "no-such-task")
    page.click("#actions button.primary")
    expect(page.locator("#summary .message")).to_contain_text("not confirmed", timeout=30_000)
    [task] = emulator.tasks()
    page.fill("input[name=task_id]", task["task_id"])
    page.click("#actions button.primary")
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    assert emulator.stats()["creates"] == 1


BROKEN = """\
name: teaser
inputs:
  prompt: {type: string, required: true}
nodes:
  - id: clip
    type: kling.video
    with:
      prompt: "{{ inputs.prompt }}"
      duration: 70
"""


def set_editor(page: Page, text: str) -> None:
    page.evaluate("(text) => document.getElementById('editor-form').editor.setValue(text)", text)


def test_a_workflow_is_authored_in_the_editor_published_and_run(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """A deliberate error shows on its line as it is typed; fixed, the draft shows its graph
    and price; Publish makes it a workflow that runs."""
    service = start_service()
    page.goto(f"{service.url}/workflows")
    page.click("text=New workflow")
    expect(page.locator(".CodeMirror")).to_be_visible()  # served from /static, no CDN
    set_editor(page, BROKEN)
    problems = page.locator("#problems li")
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("line 9")
    expect(problems.first).to_contain_text("duration")
    expect(problems.first).to_contain_text("must be 3 to 15 seconds")
    marked = page.locator(".CodeMirror .cm-problem-line")  # line number 9, then its text
    expect(marked).to_have_text(re.compile(r"^9\s+duration: 70\s*$"))
    shoot(page, "editor-problem")
    problems.first.locator("a.line").click()
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.type("5")  # typed, as a user fixes it
    expect(page.locator("#problems-none")).to_contain_text("teaser: 1 node")
    expect(page.locator(".CodeMirror .cm-problem-line")).to_have_count(0)
    expect(page.locator("#draft-flow [data-node=clip]")).to_be_visible()
    expect(page.locator("#editor-estimate")).to_contain_text("$0.50 for 1 paid submission")
    shoot(page, "editor")
    page.click("button:text('Publish')")
    expect(page).to_have_url(re.compile(r"/workflows/teaser$"))
    expect(page.locator(".flash")).to_contain_text("published version 1 of teaser")
    page.fill("#in-prompt", "a teapot pouring tea")
    page.click("text=Start run")
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    [task] = emulator.tasks()
    assert task["input"]["duration"] == 5

    page.goto(f"{service.url}/workflows/teaser")
    page.click("main a.button:text-is('Edit')")
    page.select_option("#snippet", label="Set values")
    page.evaluate("document.getElementById('editor-form').editor.setCursor({line: 99, ch: 0})")
    page.click("text=Insert at the cursor")
    expect(page.locator("#problems-none")).to_contain_text("teaser: 2 nodes")
    page.click("button:text('Publish')")
    expect(page.locator(".flash")).to_contain_text("published version 2 of teaser")
    versions = service.http.get("/api/workflows/teaser").json()
    assert len(versions["versions"]) == 2


def test_the_ui_asks_for_the_token_beyond_loopback(start_service: StartService, page: Page) -> None:
    """With a token set, pages need a login; a wrong token is refused, the right one works."""
    service = start_service(api_token=API_TOKEN)
    page.goto(f"{service.url}/runs")
    expect(page).to_have_url(re.compile(r"/login\?next=/runs$"))
    page.fill("#token", "not-the-token")
    page.click("button:text('Sign in')")
    expect(page.locator(".flash.error")).to_contain_text("not right")
    shoot(page, "login")
    page.fill("#token", API_TOKEN)
    page.click("button:text('Sign in')")
    expect(page).to_have_url(re.compile(r"/runs$"))
    assert API_TOKEN not in page.content()
    page.click("text=Sign out")
    page.goto(f"{service.url}/")
    expect(page).to_have_url(re.compile(r"/login"))


def test_every_screenshot_in_the_docs_is_taken_by_this_suite() -> None:
    """docs/service.md shows only pictures these tests take (and they exist)."""
    text = (DOCS_IMAGES.parent / "service.md").read_text()
    shown = set(re.findall(r"images/ui-([\w-]+)\.png", text))
    assert shown == DOCS_SHOTS
    assert all((DOCS_IMAGES / f"ui-{name}.png").is_file() for name in shown)


def test_pages_fit_a_phone(start_service: StartService, browser_phone: Page) -> None:
    """On a 390 px wide screen nothing scrolls sideways except tables in their own box."""
    service = start_service()
    service.publish(STUDIO)
    run_id = service.start("studio", {"prompt": "a kite over the sea"})
    service.finish(run_id)
    service.publish(BATCH)
    batch_id = service.start("batch", {"rows": [{"prompt": "a kite", "slug": "kite"}]})
    service.finish(batch_id)
    for name, path in (
        ("phone-items", f"/runs/{batch_id}/loops/each"),
        ("phone-item", f"/runs/{batch_id}/loops/each/items/0"),
        ("phone-run", f"/runs/{run_id}"),
        ("phone-workflow", "/workflows/studio"),
        ("phone-dashboard", "/"),
        ("phone-workflows", "/workflows"),
        ("phone-runs", "/runs"),
        ("phone-editor", "/editor?workflow=studio"),
    ):
        browser_phone.goto(service.url + path)
        width = browser_phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
        if name == "phone-run":  # the submissions table shows whole, nothing scrolled away
            box = browser_phone.locator("#submissions .table-wrap")
            expect(box).to_contain_text("completed")
            assert box.evaluate("b => b.scrollWidth <= b.clientWidth"), "submissions cut off"
        shoot(browser_phone, name)
