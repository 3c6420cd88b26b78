"""`klingflow video`, `cost` and `account` against the emulator, as a creator types them."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from klingflow.cli.exit_codes import EXIT_CODES
from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import Invoke

FAST = ("--poll-interval", "0.01")


def test_dry_run_prints_the_request_and_estimate_and_sends_nothing(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """--dry-run validates, shows the body and the price, and makes no request at all."""
    result = klingflow("video", "a red fox", "--duration", "10", "--audio", "--dry-run")
    assert result.exit_code == 0
    assert '"enable_audio": true' in result.stdout
    assert "estimated cost: $1.50" in result.stdout
    assert emulator.stats()["create_requests"] == 0


def test_video_downloads_a_playable_mp4_and_prints_path_and_cost(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The default flow submits once, waits, saves the MP4 and reports the cost."""
    result = klingflow("video", "a red fox", "--audio", "--out", str(tmp_path), *FAST)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path
    with av.open(str(path)) as container:
        assert container.duration is not None
        assert round(container.duration / av.time_base) == 5
        assert len(container.streams.audio) == 1
    assert "cost $0.75" in result.stderr
    assert emulator.stats()["creates"] == 1


def test_seed_style_inputs_are_accepted(klingflow: Invoke, tmp_path: Path) -> None:
    """The seed action's 'Kling V2.1' and '10s' work as the CLI's --model and --duration."""
    result = klingflow(
        "video", "a red fox", "--model", "Kling V2.1", "--duration", "10s", "--json",
        "--out", str(tmp_path), *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"]["input"]["version"] == "2.1"
    assert report["task"]["input"]["duration"] == 10
    assert report["cost_usd"] == "0.52"
    assert Path(report["path"]).is_file()


def test_multi_shot_video_has_the_shots_total_duration(klingflow: Invoke, tmp_path: Path) -> None:
    """--shot 'PROMPT:SECONDS' builds a Kling 3.0 multi-shot whose length is their sum."""
    result = klingflow(
        "video", "--shot", "a dog runs:3", "--shot", "it meets a cat:4", "--out",
        str(tmp_path / "dog.mp4"), *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "dog.mp4")) as container:
        assert container.duration is not None
        assert round(container.duration / av.time_base) == 7


def test_no_wait_prints_the_seed_return_shape(klingflow: Invoke) -> None:
    """--no-wait answers {"code": 200, "data": {"status": "pending", "task_id": ...}}."""
    result = klingflow("video", "a red fox", "--no-wait")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["code"] == 200
    assert body["data"]["status"] == "pending"
    assert len(body["data"]["task_id"]) == 36


def test_invalid_input_is_one_line_with_exit_code_3_and_nothing_sent(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """A rule broken locally names the field and spends nothing."""
    result = klingflow("video", "a red fox", "--duration", "20")
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        "error: invalid request, nothing was sent: input.duration: must be 3 to 15 seconds "
        "for version 3.0, got 20"
    ]
    assert emulator.stats()["create_requests"] == 0


def test_bad_shot_syntax_is_rejected_before_sending(klingflow: Invoke) -> None:
    """A --shot without ':SECONDS' is a clear error, not a guess."""
    result = klingflow("video", "--shot", "a dog runs")
    assert result.exit_code == 3
    assert "--shot: expected 'PROMPT:SECONDS'" in result.stderr


def test_wrong_key_exits_4(klingflow: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected key is exit code 4 with a one-line message."""
    monkeypatch.setenv("PIAPI_API_KEY", "not-the-key")
    result = klingflow("video", "a red fox", "--no-wait")
    assert result.exit_code == 4
    assert len(result.stderr.strip().splitlines()) == 1


def test_failed_generation_exits_7_with_piapi_reason(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """A task that fails at PiAPI reports its error message and exit code 7."""
    emulator.add_fault(FaultRule(action="fail_task"))
    result = klingflow("video", "a red fox", *FAST)
    assert result.exit_code == 7
    assert "failed to generate video" in result.stderr


def test_accepted_then_dropped_submission_exits_9_and_is_not_resent(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """When the create's answer is lost, the CLI says so and never submits again."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    result = klingflow("video", "a red fox", *FAST)
    assert result.exit_code == 9
    assert emulator.stats()["creates"] == 1
    assert emulator.stats()["create_requests"] == 1


def test_debug_shows_the_traceback_instead_of_one_line(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """--debug lets the exception through for a full traceback."""
    from klingflow.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        klingflow("--debug", "video", "a red fox", "--duration", "20")
    # --debug belongs to one run: the next run is back to one line and an exit code.
    assert klingflow("video", "a red fox", "--duration", "20").exit_code == 3


def test_cost_estimates_any_task_from_a_body_file(klingflow: Invoke, tmp_path: Path) -> None:
    """`cost --body` prices any Kling task type from a request file."""
    body = tmp_path / "omni.yaml"
    body.write_text(
        "model: kling\ntask_type: omni_video_generation\n"
        "input: {prompt: a cat, duration: 3, resolution: 1080p, enable_audio: true}\n"
    )
    result = klingflow("cost", "--body", str(body))
    assert result.exit_code == 0
    assert result.stdout.startswith("$0.90")
    assert klingflow("cost", "a cat", "--mode", "pro", "--duration", "10").stdout.startswith(
        "$1.50"
    )


def test_account_shows_balance_and_active_tasks(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """`account` reads the key's balance and its unfinished tasks."""
    emulator.configure(balance_usd="10", pending_seconds=10_000)
    klingflow("video", "a red fox", "--no-wait")
    result = klingflow("account", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["account"]["equivalent_in_usd"] == "9.5"
    assert report["active_tasks"]["kling"]["pending_count"] == 1
    assert "balance $9.50" in klingflow("account").stdout


def test_exit_codes_are_distinct() -> None:
    """Every documented failure kind has its own exit code."""
    codes = [code for _, code, _ in EXIT_CODES]
    assert len(codes) == len(set(codes))
    assert not {0, 1, 2} & set(codes)


def test_name_saves_the_video_under_that_name(klingflow: Invoke, tmp_path: Path) -> None:
    """`--name fox` saves `<out>/fox.mp4` (the .mp4 added) instead of `<task id>.mp4`."""
    result = klingflow("video", "a red fox", "--out", f"{tmp_path}/", "--name", "fox", *FAST)
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == tmp_path / "fox.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["fox.mp4"]


@pytest.mark.parametrize(
    ("name", "out", "says"),
    [
        ("../fox.mp4", "{tmp}/", "must be a file name, not a path"),
        ("fox.mp4", "{tmp}/clip.mp4", "already names the file"),
        ("taken.mp4", "{tmp}/", "taken.mp4 already exists"),
    ],
)
def test_a_bad_name_is_refused_before_anything_is_paid(
    name: str, out: str, says: str, klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A path, a file --out, or a name that would overwrite a video: exit 3, nothing sent."""
    (tmp_path / "taken.mp4").write_bytes(b"an earlier paid video")
    result = klingflow("video", "a red fox", "--out", out.format(tmp=tmp_path), "--name", name)
    assert result.exit_code == 3
    assert says in result.stderr
    assert emulator.stats()["create_requests"] == 0
    assert (tmp_path / "taken.mp4").read_bytes() == b"an earlier paid video"
