"""The pytest plugin `klingflow.testing`, as our users get it: registered, fast, and documented.

The user's test file in docs/emulator.md runs as written: here with the development install,
and in a fresh virtualenv holding only `pip install klingflow pytest`.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, KlingVideoRequest, PiAPI
from klingflow.testing import DEFAULT_TIME_SCALE, emulator_wait_policy

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "emulator.md"
USER_FILE = re.compile(r"^```python (test_\w+\.py)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def _user_test_file(folder: Path) -> Path:
    """Write the doc's user test file, as written, into `folder`."""
    [(name, code)] = USER_FILE.findall(DOC.read_text())
    path: Path = folder / str(name)
    path.write_text(code)
    return path


def _run_pytest(python: Path | str, test_file: Path) -> subprocess.CompletedProcess[str]:
    """pytest on one file, from its folder (so no config of ours applies), warnings as errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIAPI_", "KLINGFLOW_"))}
    return subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            test_file.name,
            "-q",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
        ],
        cwd=test_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    """Installing klingflow registers `klingflow.testing` with pytest, under `klingflow`."""
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "klingflow"] == ["klingflow.testing"]


def test_the_plugin_clients_wait_in_the_emulators_time(
    piapi_client: PiAPI, async_piapi_client: AsyncPiAPI, piapi_emulator: EmulatorServer
) -> None:
    """Both clients poll at the default policy divided by the emulator's time scale."""
    policy = emulator_wait_policy(DEFAULT_TIME_SCALE)
    assert policy.initial_interval_seconds == pytest.approx(2.0 / 1000)
    assert policy.deadline_seconds == pytest.approx(3600.0 / 1000)
    assert piapi_client.wait_policy == policy
    assert async_piapi_client.wait_policy == policy
    assert piapi_emulator.configure()["time_scale"] == DEFAULT_TIME_SCALE


def test_generate_through_the_plugin_client_downloads_a_video(
    piapi_client: PiAPI, piapi_emulator: EmulatorServer, tmp_path: Path
) -> None:
    """`piapi_client.generate` submits once, waits and downloads a real MP4."""
    task, path = piapi_client.generate(KlingVideoRequest(prompt="a fox", duration=5), tmp_path)
    assert task.status == "completed"
    assert path.read_bytes()[4:8] == b"ftyp"
    stats = piapi_emulator.stats()
    assert stats["creates"] == 1
    assert stats["gets"] >= 1


def test_the_docs_user_test_file_runs_as_written(tmp_path: Path) -> None:
    """The user's test file of docs/emulator.md passes with the plugin, warnings as errors."""
    result = _run_pytest(sys.executable, _user_test_file(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout


@pytest.mark.packaging
@pytest.mark.timeout(900)
def test_the_docs_user_test_file_runs_in_a_fresh_virtualenv(tmp_path: Path, wheel: Path) -> None:
    """`pip install 'klingflow[emulator]' pytest` into a new venv, then pytest on the doc's
    file, passes."""
    env_dir = tmp_path / "venv"
    # Without pip (ensurepip costs seconds of CPU): this process's pip installs into it, as
    # its own would; bytecode is left to the first import (`--no-compile`).
    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pytest_pin = f"pytest=={importlib.metadata.version('pytest')}"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "--no-compile",
         "-c", str(ROOT / "constraints.txt"), f"{wheel}[emulator]", pytest_pin],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    folder = tmp_path / "project"
    folder.mkdir()
    result = _run_pytest(python, _user_test_file(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout
