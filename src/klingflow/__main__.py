"""`python -m klingflow` is the `klingflow` command."""

from klingflow.cli import main

main()
