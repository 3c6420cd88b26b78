"""Bad CLI options and files: exit 2/3/15 with a message naming the field, no traceback,
no create, no secret in the output (issue #15, adversarial suite)."""

from __future__ import annotations

import itertools
from pathlib import Path

from klingflow.emulator import EmulatorServer

from .conftest import CLI, Cases, assert_no_secret, secrets_of

EXAMPLES = Path(__file__).parents[2] / "examples"
USAGE, INVALID, INVALID_WORKFLOW = 2, 3, 15

STRING_OPTIONS = [
    "--duration",
    "--aspect-ratio",
    "--model",
    "--version",
    "--mode",
    "--image",
    "--negative-prompt",
]
CHOICE_OPTIONS = {"--aspect-ratio", "--version", "--mode"}
"""Options with a fixed set of values: the parser refuses anything else as a usage error (2)."""
BAD_TEXT = ["", "   ", "\x00", "\x1b[31m", "a\x07b", "\x7f", "\t"]
BAD_PROMPTS = [
    "",
    "   ",
    "\u200b\u200b",
    "a\x00b",
    "\x1b[2J",
    "a\x08",
    "\t\n",
    "x" * 2501,
    "\u2028",
]
BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e-400", "abc"]
BAD_SHOTS = ["no-colon", ":3", "a:", "a:x", "a:-1", "a:99", "a\x00:3", "   :3"]


def field_named(output: str, option: str) -> bool:
    stem = option.lstrip("-")
    return any(name in output for name in (option, stem, stem.replace("-", "_"), "prompt"))


def check(
    failures: list[str], label: str, result_output: str, exit_code: int, exception: object,
    expected: set[int], option: str, secrets: tuple[str, ...],
) -> None:  # fmt: skip
    problems = []
    if exit_code not in expected:
        problems.append(f"exit {exit_code}, expected {sorted(expected)}")
    if exception is not None and not isinstance(exception, SystemExit):
        problems.append(f"raised {type(exception).__name__}")
    if "Traceback" in result_output:
        problems.append("printed a traceback")
    if not field_named(result_output, option):
        problems.append(f"the message does not name {option}")
    try:
        assert_no_secret(result_output, secrets)
    except AssertionError:
        problems.append("a secret was printed")
    if problems:
        failures.append(f"{label}: {'; '.join(problems)} | {result_output.strip()[:200]!r}")


def test_video_and_cost_refuse_every_bad_option(
    klingflow: CLI, emulator: EmulatorServer, api_key: str, tmp_path: Path, cases: Cases
) -> None:
    """Every string option x every bad text, bad prompts, numbers and shots: refused."""
    failures: list[str] = []
    secrets = secrets_of(api_key)
    out = f"{tmp_path}/"
    runs: list[tuple[str, list[str], str, set[int]]] = []
    for command, option, value in itertools.product(("video", "cost"), STRING_OPTIONS, BAD_TEXT):
        expected = {USAGE} if option in CHOICE_OPTIONS else {INVALID}
        runs.append((command, ["a fox", option, value], option, expected))
    for command, prompt in itertools.product(("video", "cost"), BAD_PROMPTS):
        runs.append((command, [prompt], "prompt", {INVALID}))
    for option, value in itertools.product(("--poll-interval", "--deadline"), BAD_NUMBERS):
        runs.append(("video", ["a fox", option, value], option, {USAGE, INVALID}))
    for command, shot in itertools.product(("video", "cost"), BAD_SHOTS):
        runs.append((command, ["--shot", shot], "--shot", {INVALID}))
    for extra in (["a fox"], ["--duration", "5"], ["a fox", "--duration", "5"]):
        runs.append(("video", ["--shot", "a dog:3", *extra], "--shot", {INVALID}))
    runs.append(("video", [f"{api_key}\x00"], "prompt", {INVALID}))  # a key typed by mistake
    for command, args, option, expected in runs:
        full = [command, *args] + (["--out", out] if command == "video" else [])
        result = klingflow(*full)
        label = f"{command} {args!r}"
        check(failures, label, result.output, result.exit_code, result.exception, expected,
              option, secrets)  # fmt: skip
    cases.add("cli options", len(runs))
    assert failures == [], "\n".join(failures)
    assert emulator.stats()["creates"] == 0


def test_video_refuses_unwritable_outputs(
    klingflow: CLI, emulator: EmulatorServer, api_key: str, tmp_path: Path, cases: Cases
) -> None:
    """An --out that cannot be written: exit 3 before any create."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    outs = [
        f"{a_file}/v.mp4",
        "/proc/klingflow-nope/v.mp4",
        f"{tmp_path}/{'v' * 300}.mp4",
        f"{tmp_path}/{'é' * 130}.mp4",
        f"{tmp_path}/{'d' * 256}/",
    ]
    failures: list[str] = []
    for out in outs:
        result = klingflow("video", "a fox", "--out", out)
        check(failures, f"--out {out[:60]}", result.output, result.exit_code, result.exception,
              {INVALID}, "--out", secrets_of(api_key))  # fmt: skip
    cases.add("cli --out", len(outs))
    assert failures == [], "\n".join(failures)
    assert emulator.stats()["creates"] == 0


ALIAS_BOMB = "\n".join(
    ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    + [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdef", "bcdefg", strict=True)]
)
BAD_WORKFLOWS = {
    "deep.yaml": b"name: d\nnodes:\n  - id: a\n    type: set\n    with:\n      values: "
    + b"[" * 3000
    + b"]" * 3000,
    "deep.json": b'{"name": "d", "nodes": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "alias.yaml": (ALIAS_BOMB + "\nname: bomb\nnodes: []\n").encode(),
    "recursive.yaml": b"name: r\nnodes: &n\n  - *n\n",
    "nul.yaml": b"name: n\x00\nnodes: []\n",
    "bigint.yaml": b"name: b\nnodes:\n  - {id: a, type: set, with: {values: {x: "
    + b"9" * 5000
    + b"}}}\n",
    "binary.yaml": bytes(range(256)) * 4,
    "include.yaml": b"name: inc\nnodes:\n  - {id: a, type: set, with: {values: "
    b"{x: \"{% include 'x' %}\"}}}\n",
    "bad-cron.yaml": b"name: cron\ntriggers:\n  - schedule: {cron: '61 25 * * *'}\n"
    b"nodes:\n  - {id: a, type: set, with: {values: {x: 1}}}\n",
    "crlf-header.yaml": b"name: crlf\nnodes:\n  - {id: a, type: http.request, with: "
    b'{url: "https://example.com", headers: {x-a: "a\\r\\nb"}}}\n',
    "empty.yaml": b"",
    "list.yaml": b"- 1\n- 2\n",
}
BAD_DATA = {
    "deep.json": ("[" * 3000 + "]" * 3000).encode(),
    "bigint.jsonl": ('{"prompt": ' + "9" * 5000 + "}\n").encode(),
    "binary.csv": bytes(range(256)),
    "nul.csv": b"prompt\na\x00b\n",
    "alias.yaml": ALIAS_BOMB.encode(),
    "unclosed.csv": b'prompt\n"a red fox\nb\n',
    "surrogate.json": b'[{"prompt": "\\ud800"}]',
    "blank-prompt.csv": b"prompt\n   \n",
}


def test_workflow_files_and_data_files_are_refused(
    klingflow: CLI, emulator: EmulatorServer, api_key: str, tmp_path: Path, cases: Cases
) -> None:
    """validate / publish / run on bad workflow files; -i @, --rows, --input-file, cost
    --body on bad data files: exit 15 or 3 with the file named."""
    failures: list[str] = []
    count = 0
    for name, content in BAD_WORKFLOWS.items():
        path = tmp_path / name
        path.write_bytes(content)
        for command in ("validate", "publish", "run"):
            result = klingflow(command, str(path))
            count += 1
            check(failures, f"{command} {name}", result.output, result.exit_code,
                  result.exception, {INVALID_WORKFLOW}, str(path), secrets_of(api_key))  # fmt: skip
    batch, seed = str(EXAMPLES / "batch-from-csv.yaml"), str(EXAMPLES / "seed-action.yaml")
    for name, content in BAD_DATA.items():
        path = tmp_path / name
        path.write_bytes(content)
        for args in (
            ["run", batch, "-i", f"rows=@{path}"],
            ["run", seed, "--rows", str(path)],
            ["run", seed, "--input-file", str(path)],
            ["cost", "--body", str(path)],
        ):
            result = klingflow(*args)
            count += 1
            named = str(path) if result.output.count(str(path)) else "input"
            check(failures, f"{args[0]} {args[-2]} {name}", result.output, result.exit_code,
                  result.exception, {INVALID}, named, secrets_of(api_key))  # fmt: skip
    cases.add("cli files", count)
    assert failures == [], "\n".join(failures)
    assert emulator.stats()["creates"] == 0
