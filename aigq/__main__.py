"""``python -m aigq`` is the ``aigq`` command."""

from aigq.cli import main

main()
