"""A background process owned through a PID file, so ``down`` stops only what ``up`` started."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from aigq.errors import DevStackError


@dataclass(frozen=True)
class ManagedProcess:
    """A named process with ``<state_dir>/<name>.pid`` (JSON) and ``<state_dir>/<name>.log``.

    ``marker`` is a string the process's command line must contain for a PID from the file to
    count as ours: a stale PID file whose number was reused by another process is ignored.
    """

    name: str
    state_dir: Path
    marker: str

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID if the file names a live process of ours, else None (stale files removed)."""
        try:
            record = orjson.loads(self.pid_file.read_bytes())
            pid = int(record["pid"])
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            with contextlib.suppress(OSError):
                self.pid_file.unlink(missing_ok=True)
            return None
        cmdline = _cmdline(pid)
        # A process caught in the middle of exec shows an empty command line for a moment:
        # that is "not yet readable", not "somebody else's", so look again before deciding.
        for _ in range(20):
            if cmdline != "" or not _alive(pid):
                break
            time.sleep(0.01)
            cmdline = _cmdline(pid)
        if _alive(pid) and (cmdline is None or self.marker in cmdline):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        """Start ``argv`` in its own session, output to the log file; record and return its PID.
        ``env`` replaces this process's environment for it.

        ``posix_spawn`` rather than ``subprocess.Popen``: the process is meant to outlive this
        one (a Popen dropped while its process runs is a ResourceWarning), and ``_alive``
        reaps it if it is our child when it exits.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            pid = os.posix_spawnp(
                argv[0],
                argv,
                os.environ if env is None else env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(self.log_file), out, 0o644),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,  # outlives the CLI; not killed by its Ctrl-C
            )
        except OSError as exc:
            raise DevStackError(f"cannot start {self.name} ({argv[0]}): {exc}") from exc
        self.pid_file.write_bytes(orjson.dumps({"pid": pid, "started_ms": int(time.time() * 1000)}))
        return pid

    def exited_early(self) -> str | None:
        """If the recorded process already died, the tail of its log; else None."""
        if self.pid() is not None:
            return None
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-2000:]
        return ""

    def stop(self, timeout_s: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``; True if a process of ours was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    # Reap it first if it is our own child (a test that started it in-process), else a
    # zombie would look alive forever.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _cmdline(pid: int) -> str | None:
    """The command line ("" for a zombie or a vanished process); None where /proc is absent."""
    if not Path("/proc").is_dir():
        return None
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
