"""The ``workers`` fixture: worker processes a test started, killed if it left them running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.streams.worker_proc import Worker


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
