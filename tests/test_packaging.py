"""The package as pip users get it: the wheel in fresh venvs, at the locked versions and at
the lower bounds pyproject.toml declares.

These tests are slow (each builds a venv and installs into it from the package index, or
pip's cache) and are marked `packaging`: `make packaging` runs them alone,
`pytest -m "not packaging"` skips them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from klingflow.emulator import EmulatorServer
from klingflow.extras import MISSING_EXTRA_EXIT_CODE

ROOT = Path(__file__).parents[1]
HEAVY = ("numpy", "av", "PIL", "dbos", "fastapi", "sqlalchemy", "typer", "uvicorn", "rich")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1500)]


class Venv:
    """A fresh virtual environment, and commands run in it with a clean environment.

    It is made without pip (`ensurepip` costs seconds of CPU per venv): this process's pip
    installs into it with `--python`, as the venv's own would. `--no-compile` leaves the
    bytecode to the first import, so only the modules a test imports are compiled.
    """

    def __init__(self, path: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
        )
        self.bin = path / "bin"

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """pip (this process's) on the venv's interpreter: the venv's packages."""
        return self._run([sys.executable, "-m", "pip", "--python", str(self.bin / "python"), *args])

    def pip_install(self, *args: str) -> None:
        install = self.pip(
            "install", "--quiet", "--disable-pip-version-check", "--no-compile", *args
        )
        assert install.returncode == 0, install.stderr[-3000:]

    def run(
        self, command: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.bin / command), *args], cwd=cwd, env=env)

    def _run(
        self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PIAPI_", "KLINGFLOW_", "PYTHON", "VIRTUAL_ENV"))
        }
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**clean, **(env or {})},
            timeout=900,
            check=False,
        )


def readme_python_snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [code] = re.findall(r"^```python\n(.*?)^```$", readme, re.DOTALL | re.MULTILINE)
    return str(code)


def test_the_sdist_and_wheel_carry_the_examples(dist: Path, wheel: Path) -> None:
    """`python -m build` makes both, and the wheel ships the examples beside the code."""
    import zipfile

    assert len(list(dist.glob("klingflow-*.tar.gz"))) == 1
    names = zipfile.ZipFile(wheel).namelist()
    assert "klingflow/examples/batch-from-csv.yaml" in names
    assert "klingflow/examples/prompts.csv" in names


def test_the_wheel_installs_by_role_into_fresh_venvs(
    wheel: Path, tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """Bare: the client without numpy, av, DBOS...; [cli]: commands name missing extras;
    [all]: `klingflow --help`, `klingflow demo` and README's client snippet work."""
    venv = Venv(tmp_path / "venv")

    venv.pip_install(str(wheel))
    probe = venv.run(
        "python",
        "-c",
        "import importlib.util, sys, klingflow.piapi\n"
        f"print([m for m in {HEAVY!r} if importlib.util.find_spec(m) or m in sys.modules])",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"  # not even installed
    bare = venv.run("klingflow", "--help")
    assert bare.returncode == MISSING_EXTRA_EXIT_CODE
    assert "pip install 'klingflow[cli]'" in bare.stderr

    venv.pip_install(f"{wheel}[cli]")
    price = venv.run("klingflow", "cost", "a fox", "--duration", "10", "--audio")
    assert price.returncode == 0, price.stderr
    assert price.stdout.startswith("$1.50")
    no_engine = venv.run("klingflow", "run", "flow.yaml")
    assert no_engine.returncode == MISSING_EXTRA_EXIT_CODE
    assert "pip install 'klingflow[workflows]'" in no_engine.stderr

    venv.pip_install(f"{wheel}[all]", "-c", str(ROOT / "constraints.txt"))
    assert_all_works(venv, tmp_path, emulator, api_key)


def test_the_lower_bounds_of_every_dependency_install_and_work(
    wheel: Path, tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """With every direct dependency at its lowest allowed version, the demo and the client run."""
    lowest = tmp_path / "lowest.txt"
    lowest.write_text("\n".join(lower_bounds()) + "\n", encoding="utf-8")
    venv = Venv(tmp_path / "venv")
    venv.pip_install(f"{wheel}[all]", "-c", str(lowest))
    frozen = venv.pip("freeze").stdout.splitlines()
    installed = {
        canonicalize_name(name): Version(number)
        for name, _, number in (line.partition("==") for line in frozen)
        if number
    }
    for pin in lower_bounds():
        name, _, number = pin.partition("==")
        assert installed[canonicalize_name(name)] == Version(number), pin
    assert_all_works(venv, tmp_path, emulator, api_key)


def lower_bounds() -> list[str]:
    """`name==X` for each `name>=X` of the dependencies and every extra but dev."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    specs = project["dependencies"] + [
        spec for name, group in extras.items() if name != "dev" for spec in group
    ]
    pins: set[str] = set()
    for spec in specs:
        requirement = Requirement(spec)
        if requirement.name == "klingflow":
            continue
        [low] = [s.version for s in requirement.specifier if s.operator == ">="]
        pins.add(f"{requirement.name}=={low}")
    return sorted(pins)


def assert_all_works(venv: Venv, tmp_path: Path, emulator: EmulatorServer, api_key: str) -> None:
    help_text = venv.run("klingflow", "--help")
    assert help_text.returncode == 0, help_text.stderr
    for command in ("video", "run", "serve", "emulator", "demo", "examples"):
        assert command in help_text.stdout
    demo = venv.run("klingflow", "demo", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    videos = [line for line in demo.stdout.splitlines() if ".mp4  (5.0 s, " in line]
    assert len(videos) == 5  # one playable MP4 per CSV row
    assert "5 paid submissions" in demo.stderr
    snippet = venv.run(
        "python",
        "-c",
        readme_python_snippet(),
        cwd=tmp_path,
        env={"PIAPI_BASE_URL": emulator.url, "PIAPI_API_KEY": api_key},
    )
    assert snippet.returncode == 0, snippet.stderr
    assert snippet.stdout.strip() == "0.75"
    assert len(list((tmp_path / "out").glob("*.mp4"))) >= 1
    service = venv.run(
        "python",
        "-c",
        "from klingflow.service import create_app; print(type(create_app()).__name__)",
        cwd=tmp_path,
        env={"PIAPI_API_KEY": api_key, "KLINGFLOW_HOME": str(tmp_path / "home")},
    )
    assert service.returncode == 0, service.stderr
    assert service.stdout.strip() == "FastAPI"
