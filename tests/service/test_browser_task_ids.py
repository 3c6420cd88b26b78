"""The run page's task id per uncertain item, in Debian's Chromium (issue #10 point 2).

A loop loses PiAPI's answers to two of its creates, with no webhook to settle them: the run
pauses with two `uncertain` submissions, and the page gives each its own task id field (the
UI's `runs retry --task-id 'each[0].video=ID'`). Screenshots in test-artifacts/screenshots/.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import StartService, shoot

LOOP = """\
name: batch
retry: {attempts: 1}
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.prompts }}", concurrency: 1}
    nodes:
      - id: video
        type: kling.video
        with: {prompt: "{{ item }}", download: false}
"""
PROMPTS = ["a red fox", "a paper boat", "sunflowers at dawn"]


def test_each_uncertain_item_is_settled_by_its_own_task_id_field(
    start_service: StartService, emulator: EmulatorServer, page: Page
) -> None:
    """Two items' answers are lost. Their ids typed the wrong way round are refused with the
    reason, and nothing changes; typed right, the run resumes on those tasks and completes
    with one create per item."""
    service = start_service(public_url=None)  # no webhook to settle them by itself
    service.publish(LOOP)
    emulator.add_fault(
        FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after", times=2)
    )
    run_id = service.start("batch", {"prompts": PROMPTS})
    assert service.settle(run_id)["run"]["status"] == "paused"
    assert emulator.stats()["creates"] == len(PROMPTS)  # item 3 went on; 1-2 were created
    by_prompt = {t["input"]["prompt"]: t["task_id"] for t in emulator.tasks()}
    fox, boat = by_prompt[PROMPTS[0]], by_prompt[PROMPTS[1]]

    page.goto(f"{service.url}/runs/{run_id}")
    expect(page.locator("#actions .uncertain")).to_have_count(2)
    expect(page.locator("#actions")).to_contain_text("PiAPI may have taken 2 submissions")
    first = page.get_by_label("task id for each[0].video")
    second = page.get_by_label("task id for each[1].video")
    first.fill(boat)  # swapped: each is a real task, but of the other item's prompt
    second.fill(fox)
    shoot(page, "run-uncertain-items")
    page.click("#actions button.primary")
    message = page.locator("#summary .message")
    expect(message).to_contain_text("is not this submission (it differs in input.prompt)")
    expect(message).to_contain_text("nothing was changed")
    expect(page.locator("#summary .badge")).to_have_text("paused")
    detail = service.http.get(f"/api/runs/{run_id}").json()
    assert sorted(s["state"] for s in detail["submissions"]) == [
        "completed",
        "uncertain",
        "uncertain",
    ]

    page.get_by_label("task id for each[0].video").fill(fox)
    page.get_by_label("task id for each[1].video").fill(boat)
    page.click("#actions button.primary")
    expect(page.locator("#summary .badge")).to_have_text("completed", timeout=30_000)
    shoot(page, "run-uncertain-items-settled")
    assert emulator.stats()["creates"] == len(PROMPTS)  # nothing was submitted again
    detail = service.finish(run_id)
    assert detail["run"]["status"] == "completed"
    tasks = {s["node_path"]: s["task_id"] for s in detail["submissions"]}
    assert tasks["each[0].video"] == fox
    assert tasks["each[1].video"] == boat
    assert all(s["state"] == "completed" for s in detail["submissions"])
