"""The fault suite's pure parts and its command line (no broker, no model)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from shell.cli import app
from shell.faults.cli import chosen
from shell.faults.figures import Count, Figures, compare
from shell.faults.proxy import Proxy
from shell.faults.report import notes, summary, table
from shell.faults.suite import SCENARIOS


def test_compare_counts_lost_and_duplicated_per_user() -> None:
    want = {"a": 3, "b": 2, "c": 1}
    got = {"a": 3, "b": 1, "c": 2, "stranger": 4}
    assert compare(want, got) == Count(sent=6, applied=6, lost=1, duplicated=5)
    assert compare({"a": 2}, {}) == Count(2, 0, 2, 0)


def test_verdict_names_every_broken_check() -> None:
    f = Figures("x")
    f.add(Count(10, 9, 1, 0))
    assert f.applied == 9 and not f.passed
    f.crashed.append("worker (exit -11)")
    f.check(False, "the generator answered 1 of 2 requests")
    assert f.verdict == (
        "FAIL: 1 events lost; crashed: worker (exit -11); the generator answered 1 of 2 requests"
    )
    ok = Figures("y")
    assert ok.check(True, "never shown") and ok.passed and ok.verdict == "pass"
    skipped = Figures("z", skipped="no model server")
    assert not skipped.passed and skipped.verdict == "skipped: no model server"


def test_the_table_has_one_row_per_scenario_and_the_summary_names_failures() -> None:
    good, bad = Figures("poison", events_sent=1_234), Figures("worker-kill", lost=3)
    console = Console(width=250, record=True)
    console.print(table([good, bad], "faults"))
    text = console.export_text()
    assert "1,234" in text and "pass" in text and "FAIL" in text
    assert notes([good, bad]) == ["poison: pass", "worker-kill: FAIL: 3 events lost"]
    assert summary([good, bad]) == "1 of 2 scenarios passed; failed: worker-kill"


def test_only_chooses_scenarios_by_name() -> None:
    assert chosen(None) == list(SCENARIOS)
    assert chosen("poison, clock-skew") == ["poison", "clock-skew"]
    with pytest.raises(typer.BadParameter, match="nope"):
        chosen("poison,nope")


def test_the_command_is_registered_with_its_options() -> None:
    result = CliRunner().invoke(app, ["bench", "faults", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--short", "--only", "--kills"):
        assert option in result.output


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


async def _roundtrip(port: int) -> bytes | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(b"ping")
        await writer.drain()
        return await asyncio.wait_for(reader.read(4), 5)
    finally:
        writer.close()
        await writer.wait_closed()


def test_the_proxy_forwards_while_up_and_refuses_while_down() -> None:
    listener, thread = _echo_server()
    try:
        target = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Proxy(target) as proxy:
            assert asyncio.run(_roundtrip(proxy.port)) == b"ping"
            proxy.down()
            assert asyncio.run(_roundtrip(proxy.port)) is None
            proxy.up()
            assert asyncio.run(_roundtrip(proxy.port)) == b"ping"
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the server's thread
        listener.close()
        thread.join(5)
    assert not thread.is_alive()
