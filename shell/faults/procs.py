"""The loop's processes as a fault scenario sees them: which are meant to run, which died
unasked, and whether each stops when asked.

The PIDs are taken once, while every process runs, and kept here: ``ManagedProcess.pid()``
reaps a dead child of ours without its exit status, and the status is what tells a crash
from a clean stop. The processes are children of this one (``Loop`` spawns them), so
``waitpid`` gives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aigq.dev.process import ManagedProcess
from aigq.errors import ServiceError

NAMES = ("worker", "generate", "serve")


def exit_code(pid: int) -> int | None:
    """The process's exit code (negative: the signal) once it ended, else None. A process that
    ended and was reaped elsewhere reads as -255 (status unknown)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or reaped already
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -255
        return None
    return os.waitstatus_to_exitcode(status) if done == pid else None


def wait_exit(pid: int, timeout_s: float) -> int | None:
    """Poll until the process ends or ``timeout_s`` passes: its exit code, or None."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = exit_code(pid)
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(0.05)


@dataclass
class Tracked:
    """The loop's three processes by name: their PIDs and whether each should be running."""

    procs: Mapping[str, ManagedProcess]
    env: Mapping[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    expected: set[str] = field(default_factory=set)
    """the names meant to be running now"""

    @classmethod
    def of(cls, procs: Mapping[str, ManagedProcess], env: Mapping[str, str]) -> Tracked:
        tracked = cls(procs, env)
        for name, proc in procs.items():
            pid = proc.pid()
            if pid is None:
                raise ServiceError(f"aigq {name} is not running")
            tracked.pids[name] = pid
            tracked.expected.add(name)
        return tracked

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> int | None:
        """Send ``sig`` and wait for the exit: its code, or None when it is still running."""
        self.expected.discard(name)
        pid = self.pids[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return wait_exit(pid, timeout_s)

    def restart(self, name: str) -> int:
        """Start ``aigq <name>`` again with the loop's environment."""
        pid = self.procs[name].start([sys.executable, "-m", "shell", name], dict(self.env))
        self.pids[name] = pid
        self.expected.add(name)
        return pid

    def died(self) -> dict[str, int]:
        """Processes meant to run that ended: their exit codes."""
        out = {}
        for name in sorted(self.expected):
            code = exit_code(self.pids[name])
            if code is not None:
                out[name] = code
        return out

    def log_excerpt(self, name: str, chars: int = 400) -> str:
        """The last error the process logged (what stopped it, before any noise that follows
        at a lower level), else the end of its log."""
        try:
            text = self.procs[name].log_file.read_text(errors="replace")
        except OSError:
            return ""
        errors = [line for line in text.splitlines() if '"level": "error"' in line]
        return errors[-1][:chars] if errors else text[-chars:]

    def stop_all(self, timeout_s: float) -> tuple[dict[str, int], list[str]]:
        """SIGTERM to every process meant to run, at once; then wait. Returns each one's exit
        code and the names still running at the deadline (those are killed)."""
        running = [n for n in sorted(self.expected) if exit_code(self.pids[n]) is None]
        for name in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pids[name], signal.SIGTERM)
        codes: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        for name in running:
            code = wait_exit(self.pids[name], max(0.0, deadline - time.monotonic()))
            if code is not None:
                codes[name] = code
        stuck = [n for n in running if n not in codes]
        for name in stuck:
            self.kill(name)
        self.expected.clear()
        for name in self.procs:
            self.procs[name].pid_file.unlink(missing_ok=True)
        return codes, stuck
