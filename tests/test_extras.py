"""The client imports light, and a command whose pip extra is missing names that extra."""

from __future__ import annotations

import subprocess
import sys

from klingflow.extras import MISSING_EXTRA_EXIT_CODE

# Not rich or click: httpx itself imports them for its own `httpx` command when they are
# installed (tests/test_packaging.py checks a bare install, where they are not).
HEAVY = ("numpy", "av", "PIL", "dbos", "fastapi", "sqlalchemy", "typer", "uvicorn", "yaml")


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_importing_the_client_loads_none_of_the_heavy_dependencies() -> None:
    """`import klingflow.piapi` (and `import klingflow`) leaves numpy, av, DBOS and co. unloaded."""
    result = python(
        "import sys, klingflow, klingflow.piapi\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_command_whose_extra_is_missing_names_the_extra_to_install() -> None:
    """Without DBOS installed, `klingflow run` says to install klingflow[workflows], exit 19."""
    result = python(
        "import sys; sys.modules['dbos'] = None\n"  # None in sys.modules: 'not installed'
        "sys.argv = ['klingflow', 'run', 'flow.yaml', '-i', 'x=1']\n"
        "from klingflow.__main__ import main; main()"
    )
    assert result.returncode == MISSING_EXTRA_EXIT_CODE, result.stderr
    assert "klingflow run needs the [workflows] extra" in result.stderr
    assert "pip install 'klingflow[workflows]'" in result.stderr


def test_commands_of_installed_extras_still_work_when_another_extra_is_missing() -> None:
    """Without the emulator's PyAV, `klingflow cost` still prices and `--help` lists all."""
    result = python(
        "import sys; sys.modules['av'] = None\n"
        "sys.argv = ['klingflow', 'cost', 'a fox', '--duration', '10']\n"
        "from klingflow.__main__ import main; main()"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("$1.00")


def test_the_command_without_the_cli_extra_names_the_cli_extra() -> None:
    """Without typer (a bare `pip install klingflow`), `klingflow` says to install [cli]."""
    result = python(
        "import sys; sys.modules['typer'] = None\n"
        "sys.argv = ['klingflow', '--help']\n"
        "from klingflow.__main__ import main; main()"
    )
    assert result.returncode == MISSING_EXTRA_EXIT_CODE
    assert "pip install 'klingflow[cli]'" in result.stderr
