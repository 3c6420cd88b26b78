"""`python -m klingflow` and the `klingflow` console script.

The script starts here, not in `klingflow.cli`, so that a plain `pip install klingflow` (the
client alone, without typer and rich) says which extra brings the command instead of a
traceback.
"""

from __future__ import annotations

import sys

from klingflow.extras import MISSING_EXTRA_EXIT_CODE, extra_for_module, install_hint

__all__ = ["main"]


def main() -> None:
    """Run the `klingflow` command, or name the extra it needs."""
    try:
        from klingflow.cli import app
    except ModuleNotFoundError as error:
        if (error.name or "klingflow").partition(".")[0] == "klingflow":
            raise
        extra = extra_for_module(error.name, default="cli")
        hint = install_hint(feature="the klingflow command", extra=extra, module=error.name)
        print(f"error: {hint}", file=sys.stderr)
        sys.exit(MISSING_EXTRA_EXIT_CODE)
    app()


if __name__ == "__main__":
    main()
