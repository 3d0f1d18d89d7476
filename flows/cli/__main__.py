"""`python -m flows.cli`: the same as the `posterflow` command."""

from flows.cli import main

main()
