"""`python -m crlab` is the `platform` command."""

from crlab.cli import main

main()
