"""Every CLI option is checked before the create is sent: one clear line, exit 3 (or 2 for a
usage error), and nothing reaches PiAPI (issue #15, point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import Invoke

EXAMPLES = Path(__file__).parents[2] / "examples"
INVALID = 3  # InvalidRequestError in the documented exit-code table


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    return tmp_path / "home"


VIDEO_CASES = [
    (["a fox", "--duration", ""], "--duration"),
    (["a fox", "--duration", "  "], "--duration"),
    (["a fox", "--model", ""], "--model"),
    (["a fox", "--negative-prompt", ""], "--negative-prompt"),
    (["a fox", "--image", ""], "--image"),
    (["   "], "prompt"),
    (["\u200b\u200b"], "prompt"),
    (["a fox\x00"], "prompt"),
    (["a \x1b[31mred\x1b[0m fox"], "prompt"),
    (["a fox", "--negative-prompt", "blur\x07"], "negative_prompt"),
    (["a fox", "--poll-interval", "0"], "--poll-interval"),
    (["a fox", "--poll-interval", "-1"], "--poll-interval"),
    (["a fox", "--poll-interval", "nan"], "--poll-interval"),
    (["a fox", "--deadline", "-1"], "--deadline"),
    (["a fox", "--deadline", "0"], "--deadline"),
    (["a fox", "--deadline", "nan"], "--deadline"),
    (["a fox", "--deadline", "inf"], "--deadline"),
    (["a fox", "--shot", "a dog:3", "--duration", "5"], "--shot"),
    (["a fox", "--shot", "a dog:3", "--shot", "a cat:3"], "--shot"),
]


@pytest.mark.parametrize(("args", "field"), VIDEO_CASES)
def test_video_refuses_bad_options_before_sending(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path, args: list[str], field: str
) -> None:
    """Each bad option is one line naming the field, exit 3, and zero creates."""
    result = klingflow("video", *args, "--out", f"{tmp_path}/")
    assert result.exit_code == INVALID, result.output
    assert field in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert emulator.stats()["creates"] == 0


def out_cases(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    return [
        (f"{a_file}/video.mp4", "--out"),
        ("/proc/klingflow-nope/video.mp4", "--out"),
        (f"{tmp_path}/{'v' * 300}.mp4", "--out"),
        (f"{tmp_path}/{'é' * 130}.mp4", "--out"),
    ]


def test_video_refuses_an_out_it_cannot_write(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An --out under a file, on a read-only tree, or over 255 bytes: exit 3, no create."""
    for out, field in out_cases(tmp_path):
        result = klingflow("video", "a fox", "--out", out)
        assert result.exit_code == INVALID, (out, result.output)
        assert field in result.stderr
        assert "Traceback" not in result.output
    assert emulator.stats()["creates"] == 0


@pytest.mark.parametrize(("args", "field"), VIDEO_CASES[:10])
def test_cost_refuses_the_same_options(klingflow: Invoke, args: list[str], field: str) -> None:
    """`cost` applies the same checks as `video` (it takes the same request options)."""
    result = klingflow("cost", *args)
    assert result.exit_code == INVALID, result.output
    assert field in result.stderr


@pytest.mark.parametrize("how", ["-i", "--rows"])
def test_run_refuses_a_csv_with_an_unclosed_quote(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path, how: str
) -> None:
    """A CSV whose quote never closes is an error naming the file, not a merged prompt."""
    rows = tmp_path / "rows.csv"
    rows.write_text('prompt\n"a red fox\na blue whale\n', encoding="utf-8")
    if how == "-i":
        args = [str(EXAMPLES / "batch-from-csv.yaml"), "-i", f"rows=@{rows}"]
    else:
        args = [str(EXAMPLES / "seed-action.yaml"), "--rows", str(rows)]
    result = klingflow("run", *args)
    assert result.exit_code == INVALID, result.output
    assert str(rows) in result.stderr
    assert "Traceback" not in result.output
    assert emulator.stats()["creates"] == 0


@pytest.mark.parametrize("option", ["--version", "--aspect-ratio", "--mode"])
@pytest.mark.parametrize("command", ["video", "cost"])
def test_an_empty_choice_is_a_usage_error(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path, command: str, option: str
) -> None:
    """An option with a fixed set of values refuses '' as the parser does (exit 2), naming it."""
    extra = ["--out", f"{tmp_path}/"] if command == "video" else []
    result = klingflow(command, "a fox", option, "", *extra)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output
    assert emulator.stats()["creates"] == 0
