"""The application shell: the ``aigq`` command and the whole-loop tools above the subsystems
(the local dev stack's commands, the demo, the end-to-end and fault benchmarks)."""
