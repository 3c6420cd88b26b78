"""Secret inputs misused: a secret written into the file, a secret of a non-string type.
Each: a clear error naming the field, no create, the secret printed nowhere (issue #15)."""

from __future__ import annotations

from pathlib import Path

from klingflow.emulator import EmulatorServer

from .conftest import CLI, Cases, Service, dump_sqlite, secrets_of
from .test_cli_inputs import INVALID_WORKFLOW, check

SECRET = "typed-secret-0d9e51aa"  # a test value

BAD_SPECS = {
    "default": f"{{type: string, secret: true, default: {SECRET}}}",
    "enum": f"{{type: string, secret: true, enum: [{SECRET}]}}",
    "integer": "{type: integer, secret: true}",
    "object": "{type: object, secret: true}",
    "not-a-bool": "{type: string, secret: maybe}",
}


def with_input(spec: str) -> str:
    return f"""\
name: secretive
inputs:
  token: {spec}
nodes:
  - id: clip
    type: kling.video
    with: {{prompt: "a fox", download: false}}
"""


def test_bad_secret_declarations_are_refused_everywhere(
    klingflow: CLI, service: Service, emulator: EmulatorServer, api_key: str, tmp_path: Path,
    cases: Cases,
) -> None:  # fmt: skip
    """validate / publish / run and `POST /api/workflows`: exit 15 or 422, `secret` named,
    the secret the file holds never echoed."""
    failures: list[str] = []
    secrets = (*secrets_of(api_key), SECRET)
    for name, spec in BAD_SPECS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(with_input(spec))
        for command in ("validate", "publish", "run"):
            result = klingflow(command, str(path))
            check(failures, f"{command} {name}", result.output, result.exit_code,
                  result.exception, {INVALID_WORKFLOW}, "secret", secrets)  # fmt: skip
        answer = service.http.post("/api/workflows", content=with_input(spec))
        check(failures, f"POST {name}", answer.text, 422 if answer.status_code == 422 else 0,
              None, {422}, "secret", secrets)  # fmt: skip
    cases.add("secret inputs", 4 * len(BAD_SPECS))
    assert failures == [], "\n".join(failures)
    assert emulator.stats()["creates"] == 0
    assert SECRET not in dump_sqlite(service.database)
