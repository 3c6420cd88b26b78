"""Cron schedules: checked with the file, fired once per tick by real Engines (DBOS on SQLite)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from klingflow.errors import WorkflowDefinitionError
from klingflow.workflows import ScheduleSpec, load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.registry import PublishedWorkflow, PublishOutcome, WorkflowRegistry
from klingflow.workflows.schedules import Scheduler, schedule_key
from klingflow.workflows.schema import workflows

from .harness import Harness

T0 = datetime(2030, 1, 1, 0, 2, tzinfo=UTC)

NOTE = """\
name: hourly-note
inputs:
  who: {type: string, required: true}
nodes:
  - id: note
    type: set
    with: {values: {greeting: "hello {{ inputs.who }}"}}
outputs:
  greeting: "{{ nodes.note.output.greeting }}"
"""


def scheduled(schedules: str, *, name: str = "hourly-note") -> str:
    """NOTE under another name, with a `schedules:` block (YAML, indented by two)."""
    return NOTE.replace("hourly-note", name) + "schedules:\n" + schedules


def problems_of(text: str) -> list[str]:
    with pytest.raises(WorkflowDefinitionError) as caught:
        load_workflow_text(text, path="note.yaml")
    return [str(problem) for problem in caught.value.problems]


def registry_of(engine: Engine) -> WorkflowRegistry:
    return WorkflowRegistry(engine.runlog.engine)


def content_key(cron: str, payload: dict[str, Any], timezone: str = "UTC") -> str:
    """The key an unnamed schedule with this content has in its runs' idempotency keys."""
    return ScheduleSpec(cron=cron, timezone=timezone, payload=payload).key()


async def settled(engine: Engine, runs: list[RunRecord]) -> list[RunRecord]:
    return await engine.wait([run.run_id for run in runs], timeout_seconds=60)


# -- the spec ----------------------------------------------------------------------------------


def test_schedules_load_with_their_defaults() -> None:
    """Five fields, a sixth for seconds and the @ shorthands load; timezone defaults to UTC."""
    workflow = load_workflow_text(
        scheduled(
            "  - cron: '*/15 9-17 * * mon-fri'\n"
            "    payload: {who: team}\n"
            "  - {cron: '* * * * * */30', payload: {who: tests}, name: often}\n"
            "  - {cron: '@daily', timezone: Europe/Berlin, payload: {who: berlin}}\n"
        )
    )
    first, often, daily = workflow.schedules
    assert first == ScheduleSpec(cron="*/15 9-17 * * mon-fri", payload={"who": "team"})
    assert first.timezone == "UTC"
    assert first.name is None
    assert often.key() == "often"
    assert first.key() == "cron-32f2b865"  # from the content: stable across releases
    assert daily.key() == content_key("@daily", {"who": "berlin"}, "Europe/Berlin")
    assert daily.timezone == "Europe/Berlin"


def test_unnamed_schedule_keys_follow_their_content_not_their_position() -> None:
    """Reordering unnamed schedules keeps each one's key; another payload, cron or zone
    gives another key; spacing in the expression does not matter."""
    one = "  - {cron: '0 9 * * *', payload: {who: a}}\n"
    two = "  - {cron: '*/5 * * * *', payload: {who: b}}\n"
    named = "  - {cron: '@daily', name: daily, payload: {who: c}}\n"
    before = load_workflow_text(scheduled(one + two + named)).schedules
    after = load_workflow_text(scheduled(named + two + one.replace("0 9", "0  9"))).schedules
    assert [s.key() for s in before] == [s.key() for s in reversed(after)]
    assert before[2].key() == "daily"
    assert all(re.fullmatch(r"cron-[0-9a-f]{8}", s.key()) for s in before[:2])
    variants = {
        content_key("0 9 * * *", {"who": "a"}),
        content_key("0 9 * * *", {"who": "z"}),
        content_key("0 10 * * *", {"who": "a"}),
        content_key("0 9 * * *", {"who": "a"}, "Europe/Berlin"),
    }
    assert before[0].key() in variants
    assert len(variants) == 4


def test_a_workflow_without_schedules_keeps_its_content_hash() -> None:
    """Adding the `schedules` field changed no published version's hash; a schedule does."""
    plain = load_workflow_text(NOTE)
    assert plain.content_hash == "58c47e1cbc29729795c51d462a4715cdb5326cbcea8664e164eee4fad6baa222"
    assert load_workflow_text(NOTE + "schedules: []\n").content_hash == plain.content_hash
    with_one = load_workflow_text(scheduled("  - {cron: '@hourly', payload: {who: a}}\n"))
    assert with_one.content_hash != plain.content_hash


def test_a_bad_cron_expression_is_refused_with_its_line() -> None:
    """Out-of-range values, the wrong number of fields and impossible dates name the line."""
    assert problems_of(
        scheduled(
            "  - {cron: '61 * * * *', payload: {who: a}}\n"
            "  - {cron: '0 9 * *', payload: {who: a}}\n"
            "  - {cron: '0 0 * * * * 2031', payload: {who: a}}\n"
            "  - {cron: '0 0 30 2 *', payload: {who: a}}\n"
            "  - {cron: '@reboot', payload: {who: a}}\n"
        )
    ) == [
        "note.yaml:11: schedules[0].cron: is not a valid cron expression: "
        "[61 * * * *] is not acceptable, out of range",
        "note.yaml:12: schedules[1].cron: has 4 fields; write 5 fields (minute hour "
        "day-of-month month day-of-week) and an optional 6th for seconds",
        "note.yaml:13: schedules[2].cron: has 7 fields; write 5 fields (minute hour "
        "day-of-month month day-of-week) and an optional 6th for seconds",
        "note.yaml:14: schedules[3].cron: '0 0 30 2 *' never matches a date (such as 30 February)",
        "note.yaml:15: schedules[4].cron: unknown shorthand '@reboot' (use one of @hourly, "
        "@daily, @midnight, @weekly, @monthly, @yearly, @annually)",
    ]


def test_an_unknown_timezone_is_refused_with_a_hint() -> None:
    """The zone must be an IANA name; a wrong case gets a "did you mean"."""
    assert problems_of(
        scheduled(
            "  - cron: '0 9 * * *'\n"
            "    timezone: europe/berlin\n"
            "    payload: {who: a}\n"
            "  - cron: '0 9 * * *'\n"
            "    timezone: Mars/Olympus\n"
            "    payload: {who: a}\n"
        )
    ) == [
        "note.yaml:12: schedules[0].timezone: unknown time zone 'europe/berlin' "
        "(did you mean 'Europe/Berlin'?)",
        "note.yaml:15: schedules[1].timezone: unknown time zone 'Mars/Olympus' "
        "(an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York')",
    ]


def test_a_payload_that_fails_the_inputs_is_refused() -> None:
    """A schedule whose run could never start is refused when the file is validated."""
    text = NOTE.replace(
        "  who: {type: string, required: true}\n",
        "  who: {type: string, required: true}\n  takes: {type: integer, default: 1}\n",
    )
    assert problems_of(
        text + "schedules:\n"
        "  - cron: '@hourly'\n"
        "    payload: {takes: '2'}\n"
        "  - {cron: '@daily', name: daily, payload: {who: a}}\n"
        "  - {cron: '@weekly', name: daily, payload: {who: a}}\n"
    ) == [
        "note.yaml:13: schedules[0].payload.who: is required (inputs.who)",
        "note.yaml:13: schedules[0].payload.takes: must be an integer, got '2' (inputs.takes)",
        "note.yaml:15: schedules[2].name: duplicate schedule name (first on line 14)",
    ]


def test_two_unnamed_schedules_with_the_same_content_are_refused() -> None:
    """Unnamed twins would share their runs' keys (one run a tick for both): name them."""
    twin = "  - {cron: '@hourly', payload: {who: a}}\n"
    assert problems_of(scheduled(twin + "  - {cron: '@daily', payload: {who: a}}\n" + twin)) == [
        "note.yaml:13: schedules[2]: has the same cron, timezone and payload as schedules[0] "
        "(line 11), so their runs would share idempotency keys; remove one, or name each"
    ]
    named = "  - {cron: '@hourly', name: again, payload: {who: a}}\n"
    assert len(load_workflow_text(scheduled(twin + named)).schedules) == 2


def test_unknown_schedule_keys_are_refused_with_a_hint() -> None:
    """A misspelt key in a schedule is a problem with a "did you mean"."""
    assert problems_of(scheduled("  - {cron: '@weekly', payload: {who: a}, timezon: UTC}\n")) == [
        "note.yaml:11: schedules[0].timezon: is not a known field (did you mean 'timezone'?)"
    ]


# -- the scheduler -----------------------------------------------------------------------------


def test_fire_due_starts_one_run_per_due_tick_with_its_key_and_payload(harness: Harness) -> None:
    """Ticks after the first look fire once each, keyed by workflow, schedule and UTC tick."""
    text = scheduled(
        "  - {cron: '*/5 * * * *', name: five, payload: {who: fox}}\n"
        "  - {cron: '20 1 * * *', timezone: Europe/Berlin, payload: {who: owl}}\n"
    )

    owl = content_key("20 1 * * *", {"who": "owl"}, "Europe/Berlin")

    async def work(engine: Engine) -> None:
        registry_of(engine).publish(text)
        scheduler = Scheduler(engine, registry_of(engine), grace_seconds=timedelta(hours=1))
        assert await scheduler.fire_due(T0) == []  # the first look only starts the clock
        runs = await scheduler.fire_due(T0.replace(minute=22))
        assert await scheduler.fire_due(T0.replace(minute=22)) == []  # each tick fires once

        # 00:00 is before the first look; 01:20 in Berlin is 00:20 UTC in winter.
        assert [run.idempotency_key for run in runs] == [
            "schedule:hourly-note:five:2030-01-01T00:05:00Z",
            "schedule:hourly-note:five:2030-01-01T00:10:00Z",
            "schedule:hourly-note:five:2030-01-01T00:15:00Z",
            "schedule:hourly-note:five:2030-01-01T00:20:00Z",
            f"schedule:hourly-note:{owl}:2030-01-01T00:20:00Z",
        ]
        done = await settled(engine, runs)
        assert all(run.status == RunStatus.COMPLETED for run in done)
        assert [run.trigger for run in done] == [{"who": "fox"}] * 4 + [{"who": "owl"}]
        assert done[0].inputs == {"who": "fox"}
        assert done[-1].outputs == {"greeting": "hello owl"}

    harness.session(work)


def test_a_version_never_fires_ticks_from_before_it_was_published(harness: Harness) -> None:
    """A scheduler that has been looking for ten minutes does not fire a new schedule's last
    ten minutes: its first tick is the first one after the version was published."""

    async def work(engine: Engine) -> tuple[datetime, list[RunRecord]]:
        scheduler = Scheduler(engine, registry_of(engine), grace_seconds=timedelta(hours=1))
        await scheduler.fire_due(datetime.now(UTC) - timedelta(minutes=10))
        version, _ = registry_of(engine).publish(
            scheduled("  - {cron: '* * * * *', payload: {who: cat}}\n")
        )
        published = datetime.fromtimestamp(version.created_at, UTC)
        return published, await scheduler.fire_due(published + timedelta(minutes=2))

    published, runs = harness.session(work)
    ticks = [datetime.fromisoformat(str(run.idempotency_key).split(":", 3)[3]) for run in runs]
    assert len(ticks) == 2
    assert all(published < tick <= published + timedelta(minutes=2) for tick in ticks)


def test_two_schedulers_firing_the_same_tick_start_one_run(harness: Harness) -> None:
    """Processes do not coordinate: the tick's idempotency key makes the second find the run."""
    text = scheduled("  - {cron: '* * * * * */10', payload: {who: both}}\n")

    async def work(engine: Engine) -> None:
        registry_of(engine).publish(text)
        first, second = (
            Scheduler(engine, registry_of(engine)),
            Scheduler(engine, registry_of(engine)),
        )
        await asyncio.gather(first.fire_due(T0), second.fire_due(T0))
        now = T0 + timedelta(seconds=30)
        a, b = await asyncio.gather(first.fire_due(now), second.fire_due(now))
        assert [run.run_id for run in a] == [run.run_id for run in b]
        assert len(a) == 3
        assert len(engine.runlog.list_runs(workflow_name="hourly-note")) == 3
        key = content_key("* * * * * */10", {"who": "both"})
        assert a[0].idempotency_key == schedule_key("hourly-note", key, T0 + timedelta(seconds=10))
        await settled(engine, a)

    harness.session(work)


def test_the_latest_published_version_is_used(harness: Harness) -> None:
    """Publishing a new version changes the schedule at the next look, without a restart."""
    v1 = scheduled("  - {cron: '* * * * *', name: tick, payload: {who: one}}\n")
    v2 = scheduled("  - {cron: '*/2 * * * *', name: tick, payload: {who: two}}\n")
    v3 = NOTE  # no schedules any more

    async def work(engine: Engine) -> None:
        registry = registry_of(engine)
        first, _ = registry.publish(v1)
        scheduler = Scheduler(engine, registry, grace_seconds=3600)
        await scheduler.fire_due(T0)
        [one] = await scheduler.fire_due(T0 + timedelta(minutes=1))
        second, _ = registry.publish(v2)
        two = await scheduler.fire_due(T0 + timedelta(minutes=4))
        registry.publish(v3)
        assert await scheduler.fire_due(T0 + timedelta(minutes=10)) == []

        assert (one.workflow_hash, one.trigger) == (first.hash, {"who": "one"})
        assert [run.idempotency_key for run in two] == [
            "schedule:hourly-note:tick:2030-01-01T00:04:00Z",
            "schedule:hourly-note:tick:2030-01-01T00:06:00Z",
        ]
        assert {(run.workflow_hash, run.trigger["who"]) for run in two} == {(second.hash, "two")}
        await settled(engine, [one, *two])

    harness.session(work)


def test_a_broken_version_is_skipped_and_other_schedules_still_fire(
    harness: Harness, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored version that no longer loads is logged once, without secrets; others fire."""
    broken = scheduled(f"  - {{cron: '* * * * *', payload: {{who: [{api_key}]}}}}\n", name="broken")
    good = scheduled("  - {cron: '* * * * *', payload: {who: b}}\n", name="healthy")
    caplog.set_level(logging.INFO, logger="klingflow.schedules")

    async def work(engine: Engine) -> None:
        registry = registry_of(engine)
        with engine.runlog.engine.begin() as tx:  # as an older klingflow might have stored it
            values = {
                "name": "broken",
                "hash": "0" * 64,
                "source": broken,
                "created_at": time.time(),
            }
            tx.execute(workflows.insert().values(**values))
        registry.publish(good)
        scheduler = Scheduler(engine, registry, grace_seconds=3600)
        await scheduler.fire_due(T0)
        runs = await scheduler.fire_due(T0 + timedelta(minutes=2))
        runs += await scheduler.fire_due(T0 + timedelta(minutes=3))
        assert [run.workflow_name for run in runs] == ["healthy"] * 3
        await settled(engine, runs)

    harness.session(work)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("workflow broken (version 000000000000) no longer loads")
    assert "schedules[0].payload.who: must be a string, got ['***']" in warnings[0]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert api_key not in logged
    key = content_key("* * * * *", {"who": "b"})
    assert f"schedule healthy:{key}: schedule:healthy:{key}:2030-01-01T00:03:00Z is run-" in logged


def test_ticks_later_than_the_grace_are_skipped_not_caught_up(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """After a suspended process wakes, only ticks within `grace_seconds` fire; the rest are
    logged as skipped, so a long pause never turns into a burst of paid runs."""
    text = scheduled("  - {cron: '* * * * *', payload: {who: late}}\n")
    caplog.set_level(logging.WARNING, logger="klingflow.schedules")

    async def work(engine: Engine) -> None:
        registry_of(engine).publish(text)
        scheduler = Scheduler(engine, registry_of(engine), grace_seconds=90)
        await scheduler.fire_due(T0)
        runs = await scheduler.fire_due(T0 + timedelta(hours=2))
        key = content_key("* * * * *", {"who": "late"})
        assert [run.idempotency_key for run in runs] == [
            f"schedule:hourly-note:{key}:2030-01-01T02:01:00Z",
            f"schedule:hourly-note:{key}:2030-01-01T02:02:00Z",
        ]
        await settled(engine, runs)

    harness.session(work)
    [warning] = [record.getMessage() for record in caplog.records]
    assert "ticks from 2030-01-01T00:03:00+00:00 to 2030-01-01T02:00:30+00:00" in warning


def test_ticks_follow_the_expression_in_its_timezone() -> None:
    """`ticks` and `next_tick` give aware UTC times of the expression read in its zone."""
    every_minute = load_workflow_text(scheduled("  - {cron: '* * * * *', payload: {who: a}}\n"))
    hourly = load_workflow_text(scheduled("  - {cron: '@hourly', payload: {who: a}}\n"))
    now = T0 + timedelta(seconds=50)
    [minute_tick] = every_minute.schedules
    [hour_tick] = hourly.schedules
    assert minute_tick.next_tick(after=now) == T0 + timedelta(minutes=1)
    assert hour_tick.next_tick(after=now) == T0.replace(hour=1, minute=0)
    assert list(minute_tick.ticks(after=T0, until=T0 + timedelta(minutes=2))) == [
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    ]
    berlin = ScheduleSpec(cron="0 9 * * *", timezone="Europe/Berlin")
    summer = datetime(2030, 7, 1, tzinfo=UTC)
    assert berlin.next_tick(after=summer) == datetime(2030, 7, 1, 7, tzinfo=UTC)


def test_seconds_until_next_tick_is_capped(harness: Harness) -> None:
    """The loop wakes at the next tick (here 10 s away) but never sleeps past its cap."""
    text = scheduled("  - {cron: '* * * * *', payload: {who: a}}\n")

    async def work(engine: Engine) -> None:
        registry_of(engine).publish(text)
        scheduler = Scheduler(engine, registry_of(engine), max_interval_seconds=30)
        assert scheduler.seconds_until_next(T0) == 30  # nothing read yet
        await scheduler.fire_due(T0)
        assert 10 <= scheduler.seconds_until_next(T0 + timedelta(seconds=50)) < 10.1
        assert (
            Scheduler(engine, registry_of(engine), max_interval_seconds=5).max_interval_seconds == 5
        )
        with pytest.raises(ValueError, match="max_interval_seconds"):
            Scheduler(engine, registry_of(engine), max_interval_seconds=0)

    harness.session(work)


def test_the_background_task_fires_each_tick_once_until_the_block_exits(harness: Harness) -> None:
    """`async with Scheduler(...)` fires a seconds-level schedule in real time, then stops."""
    text = scheduled("  - {cron: '* * * * * *', payload: {who: now}}\n")

    async def work(engine: Engine) -> list[RunRecord]:
        registry_of(engine).publish(text)
        async with Scheduler(engine, registry_of(engine)) as scheduler:
            assert scheduler.is_running
            deadline = time.monotonic() + 30
            while len(engine.runlog.list_runs()) < 2:
                assert time.monotonic() < deadline, "no two ticks fired"
                await asyncio.sleep(0.05)
        assert not scheduler.is_running
        runs = engine.runlog.list_runs()
        return await settled(engine, runs)

    runs = harness.session(work)
    ticks = sorted(
        datetime.fromisoformat(str(run.idempotency_key).split(":", 3)[3].replace("Z", "+00:00"))
        for run in runs
    )
    assert all(run.status == RunStatus.COMPLETED for run in runs)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))


def test_republishing_an_older_version_fires_its_schedules_again(harness: Harness) -> None:
    """a (published an hour ago), then b (adds an every-minute schedule), then a again: a's
    schedule fires, b's does not, and only ticks after a came back (not the last hour's)."""
    a = scheduled("  - {cron: '* * * * *', name: minutely, payload: {who: a}}\n")
    b = a + "  - {cron: '* * * * *', name: expensive, payload: {who: b}}\n"

    async def work(engine: Engine) -> None:
        registry = registry_of(engine)
        first, outcome = registry.publish(a)
        assert outcome == PublishOutcome.PUBLISHED
        with engine.runlog.engine.begin() as tx:  # as if it had been published an hour ago
            tx.execute(workflows.update().values(created_at=first.created_at - 3600))
        scheduler = Scheduler(engine, registry, grace_seconds=timedelta(hours=1))
        await scheduler.fire_due(datetime.now(UTC) - timedelta(minutes=10))
        second, outcome = registry.publish(b)
        assert outcome == PublishOutcome.PUBLISHED
        again, outcome = registry.publish(a)
        assert outcome == PublishOutcome.REPUBLISHED
        assert (again.hash, again.source) == (first.hash, a)
        assert again.created_at > second.created_at
        assert registry.latest("hourly-note") == again

        back = datetime.fromtimestamp(again.created_at, UTC)
        runs = await scheduler.fire_due(back + timedelta(minutes=2))
        assert len(runs) == 2  # not the ten minutes before: a was published again only now
        assert {run.workflow_hash for run in runs} == {first.hash}
        for run in runs:
            _, name, schedule, at = str(run.idempotency_key).split(":", 3)
            assert (name, schedule) == ("hourly-note", "minutely")
            assert datetime.fromisoformat(at) > back
        await settled(engine, runs)

    harness.session(work)


class _PublishesWhileReading(WorkflowRegistry):
    """As if another process published `replacement` just after this one read the registry."""

    replacement: str | None = None

    def latest(self, name: str) -> PublishedWorkflow | None:
        found = super().latest(name)
        if self.replacement is not None:
            replacement, self.replacement = self.replacement, None
            self.publish(replacement)
        return found


def test_a_version_replaced_after_the_look_read_it_does_not_fire(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Each tick checks that its version is still the latest just before starting the run."""
    v1 = scheduled("  - {cron: '* * * * *', payload: {who: one}}\n")
    v2 = scheduled("  - {cron: '* * * * *', payload: {who: two}}\n")
    caplog.set_level(logging.INFO, logger="klingflow.schedules")

    async def work(engine: Engine) -> list[RunRecord]:
        registry = _PublishesWhileReading(engine.runlog.engine)
        registry.publish(v1)
        scheduler = Scheduler(engine, registry, grace_seconds=3600)
        await scheduler.fire_due(T0)
        registry.replacement = v2
        assert await scheduler.fire_due(T0 + timedelta(minutes=2)) == []
        return await scheduler.fire_due(T0 + timedelta(minutes=3))

    runs = harness.session(work)
    key = content_key("* * * * *", {"who": "one"})
    assert (
        f"schedule hourly-note:{key}: schedule:hourly-note:{key}:2030-01-01T00:03:00Z not "
        "started, version" in caplog.text
    )
    assert [run.trigger for run in runs] == [{"who": "two"}]


def test_an_unexpected_error_in_one_schedule_does_not_stop_the_others(
    harness: Harness, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A run the database refuses (a budget too large for its integer column) is logged with
    the secrets masked; the other workflow's schedule still fires, and the next look too."""
    huge = scheduled(
        f"  - {{cron: '* * * * *', name: huge, payload: {{who: '{api_key}'}}}}\n", name="aaa-huge"
    ).replace("nodes:", "budget_usd: 1e30\nnodes:")
    good = scheduled("  - {cron: '* * * * *', name: fine, payload: {who: b}}\n", name="zzz-good")
    caplog.set_level(logging.INFO, logger="klingflow.schedules")

    async def work(engine: Engine) -> list[RunRecord]:
        registry = registry_of(engine)
        registry.publish_all([huge, good])
        scheduler = Scheduler(engine, registry, grace_seconds=3600)
        await scheduler.fire_due(T0)
        runs = await scheduler.fire_due(T0 + timedelta(minutes=2))
        runs += await scheduler.fire_due(T0 + timedelta(minutes=3))
        assert engine.runlog.list_runs(workflow_name="aaa-huge") == []
        return await settled(engine, runs)

    runs = harness.session(work)
    assert [run.idempotency_key for run in runs] == [
        f"schedule:zzz-good:fine:2030-01-01T00:0{minute}:00Z" for minute in (3, 4, 5)
    ]
    assert {run.status for run in runs} == {RunStatus.COMPLETED}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # once a look: its later ticks in the same look are not tried
    assert errors[0].startswith(
        "schedule aaa-huge:huge: the run of schedule:aaa-huge:huge:2030-01-01T00:03:00Z "
        "was not started, unexpected "
    )
    assert api_key not in caplog.text
