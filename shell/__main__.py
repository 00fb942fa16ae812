"""``python -m shell`` is the ``aigq`` command."""

from shell.cli import main

main()
