"""One structlog setup for every process: JSON lines, or a console renderer on a TTY.

Logging never raises into the code that logs. Seen in a hostile run: with stderr on a full
disk and Redis down, every hint request logged a warning, the write raised ``OSError``
(ENOSPC) into the request handler, then into its error handler, and no request got an
answer; ``/readyz`` answered 500 and a session worker exited. Here a line the stream refuses
(``OSError``: a full disk, a broken pipe; ``ValueError``: a closed stream) or that cannot be
rendered is dropped and counted in :func:`write_errors` (exposed as
``aigq_log_write_errors_total``), never retried and never reported on the same stream.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog

_lock = threading.Lock()
_write_errors = 0


def write_errors() -> int:
    """Log lines dropped since the process started: the stream refused them, or they could
    not be rendered."""
    return _write_errors


def _dropped() -> None:
    global _write_errors
    with _lock:
        _write_errors += 1


class _LineLogger:
    """structlog's ``PrintLogger`` without the exceptions: one write and a flush per line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        try:
            with _lock:  # lines from several threads do not interleave
                self._stream.write(message + "\n")
                self._stream.flush()
        except (OSError, ValueError):  # full disk, broken pipe, closed stream
            _dropped()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _Handler(logging.StreamHandler[TextIO]):
    """The stdlib side: a line that cannot be written or formatted is counted, not printed
    (``logging.Handler.handleError`` prints a traceback to ``sys.stderr``: the same stream)."""

    def handleError(self, record: logging.LogRecord) -> None:
        _dropped()

    def flush(self) -> None:
        try:
            super().flush()
        except (OSError, ValueError):  # logging.shutdown flushes at exit, outside emit
            _dropped()


def _guarded(base: type[Any]) -> type[Any]:
    """``base`` (a structlog bound logger class) whose calls never raise: a processor that
    fails drops the line and counts it. ``_proxy_to_logger`` is the method structlog's
    documentation names for wrapper classes to call; every level method goes through it."""

    class Guarded(base):  # type: ignore[misc]
        def _proxy_to_logger(self, method_name: str, event: Any = None, **event_kw: Any) -> Any:
            try:
                return super()._proxy_to_logger(method_name, event, **event_kw)
            except Exception:  # noqa: BLE001 (logging must never raise into its caller)
                _dropped()
                return None

    return Guarded


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """Route structlog and stdlib logging to stderr, as JSON unless stderr is a terminal.

    ``json=None`` decides by ``sys.stderr.isatty()``; tests and containers get JSON.
    """
    stream = sys.stderr
    try:
        tty = stream.isatty()
    except (OSError, ValueError):
        tty = False
    if json is None:
        json = not tty
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=tty)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=_guarded(structlog.make_filtering_bound_logger(numeric)),
        logger_factory=lambda *args: _LineLogger(stream),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries (aiokafka, faust, kafka-python, uvicorn) log through stdlib
    # logging: render them the same way.
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Their INFO chatter (every metadata refresh) drowns ours: keep them at WARNING or above.
    root.setLevel(max(numeric, logging.WARNING))
    # No "--- Logging error ---" tracebacks from any other handler either: they go to stderr.
    logging.raiseExceptions = False


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
