"""Slow clients against ``aigq serve``: connections that send nothing, and slow-loris ones
that send a request's headers a byte at a time and never finish them. The server must close
each within ``--header-timeout-s``, and ordinary requests must keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from shell.faults.stage import Stage

DRIP_S = 0.5  # a slow-loris client sends one more header byte this often


@dataclass(frozen=True)
class Held:
    """How long the server kept each connection open (None: still open at the deadline)."""

    silent: list[float | None]
    loris: list[float | None]

    @staticmethod
    def still_open(times: list[float | None]) -> int:
        return sum(t is None for t in times)


async def _closed(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Read until the server closes (anything it says first, a 408, is read and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while loop.time() < deadline:
            data = await asyncio.wait_for(reader.read(4096), deadline - loop.time())
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True
    return False


async def _hold(host: str, port: int, drip: bool, deadline_s: float) -> float | None:
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0.0  # refused: not held open either
    started = loop.time()
    try:
        if not drip:
            return loop.time() - started if await _closed(reader, deadline_s) else None
        writer.write(b"GET /v1/hints/u0000 HTTP/1.1\r\nHost: faults\r\nX-Slow: ")
        while loop.time() - started < deadline_s:
            try:
                writer.write(b"a")
                await writer.drain()
            except OSError:
                return loop.time() - started
            if await _closed(reader, DRIP_S):
                return loop.time() - started
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def hold(host: str, port: int, each: int, deadline_s: float) -> Held:
    """``each`` silent and ``each`` slow-loris connections at once."""
    silent = [_hold(host, port, False, deadline_s) for _ in range(each)]
    loris = [_hold(host, port, True, deadline_s) for _ in range(each)]
    times = await asyncio.gather(*silent, *loris)
    return Held(list(times[:each]), list(times[each:]))


def slow_clients(stage: Stage) -> None:
    each = stage.size(20, 200)
    allowed = stage.options.header_timeout_s
    with stage.loop() as run:
        prober = run.probe([f"u{i:04d}" for i in range(20)], rate=20)
        host, port = run.loop.api_url.removeprefix("http://").rsplit(":", 1)
        held = asyncio.run(hold(host, int(port), each, allowed))
        f = run.figures
        for kind, times in (("silent", held.silent), ("slow-loris", held.loris)):
            left = Held.still_open(times)
            f.check(left == 0, f"{left} of {each} {kind} connections still open after "
                    f"{allowed:.0f} s")  # fmt: skip
            closed = [t for t in times if t is not None]
            if closed:
                f.note(f"{kind}: {len(closed)} closed by the server, the last after "
                       f"{max(closed):.1f} s")  # fmt: skip
        failed = prober.failed()
        slowest = max((a.seconds for a in prober.answers), default=0.0)
        f.check(failed == 0, f"{failed} ordinary requests failed meanwhile")
        f.note(f"ordinary requests: {len(prober.answers)}, slowest {slowest * 1000:.0f} ms")
