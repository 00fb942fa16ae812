"""The session worker against faults of the real broker: a broker that restarts and loses its
logs (the local broker keeps them in memory), records keyed to another partition, a crash."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from aigq.codec import encode
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.dev.probe import free_port, wait_until
from aigq.dev.stack import DevSettings, DevStack
from aigq.dev.topics import ensure_topics
from aigq.events import SearchEvent
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings

# The SIGKILL test's helpers: one way to run a worker and read its state.
from tests.streams.worker_proc import Worker, _latest_states, _produce

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(tmp_path: Path, redis_settings: RedisSettings) -> Iterator[DevStack]:
    """A broker of this test's own, which it may kill and start again."""
    stack = DevStack(
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{free_port()}", bootstrap_timeout_ms=10_000
        ),
        redis=redis_settings,
        topics=TopicSettings(prefix=f"r{uuid.uuid4().hex[:6]}", partitions=2),
        dev=DevSettings(state_dir=tmp_path / "stack"),
    )
    stack.up()
    yield stack
    stack.down()


def _events(seed: int, days: int) -> list[SearchEvent]:
    world = SyntheticConfig(users=12, days=days, seed=seed)
    return [i for i in generate(world) if isinstance(i, SearchEvent)]


def _applied(kafka: KafkaSettings, changelog: str, want: int) -> Callable[[], bool]:
    """Whether the sessions in ``changelog`` count ``want`` events in all."""
    return lambda: sum(s.version for s in _latest_states(kafka, changelog)[0].values()) >= want


def test_a_broker_that_lost_its_logs_is_a_reset_and_no_new_event_is_skipped(
    own_stack: DevStack, tmp_path: Path, workers: list[Worker]
) -> None:
    kafka, topics = own_stack.kafka, own_stack.topics
    app_id = f"reset-{uuid.uuid4().hex[:6]}"
    changelog = f"{app_id}-sessions-changelog"
    before = _events(seed=1, days=6)
    after = _events(seed=2, days=2)  # fewer: the new log stays below the old offsets
    _produce(kafka, topics, before)
    worker = Worker(kafka, topics, app_id, tmp_path)
    workers.append(worker)
    worker.start()
    applied = _applied(kafka, changelog, len(before))
    assert wait_until(applied, 90, 1.0), worker.log.read_text()[-3000:]
    # The broker dies and comes back empty: topics, offsets and changelog are gone.
    assert own_stack.broker_process.stop()
    own_stack.up()
    # The worker's changelog is gone too; a real broker keeps it (only the source log is
    # new here), so it is made again as the worker made it at its start.
    ensure_topics(kafka, [changelog], topics.partitions, 1)
    _produce(kafka, topics, after)
    want = Counter(e.user_id for e in before) + Counter(e.user_id for e in after)
    touched = {e.user_id for e in after}

    def caught_up() -> bool:
        states, _ = _latest_states(kafka, changelog)
        return all(u in states and states[u].version >= want[u] for u in touched)

    ok = wait_until(caught_up, 120, 1.0)
    states, _ = _latest_states(kafka, changelog)
    got = {u: states[u].version if u in states else None for u in touched}
    assert ok, (got, {u: want[u] for u in touched}, worker.log.read_text()[-3000:])
    assert got == {u: want[u] for u in touched}  # nothing skipped, nothing twice
    assert "source partition reset" in worker.log.read_text()
    assert worker.stop() == 0


def test_records_keyed_to_another_partition_are_all_applied(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[Worker]
) -> None:
    # A null key, or another user's key, puts a user's record in another partition, at
    # offsets unrelated to the user's own: each is applied once.
    app_id = f"keys-{uuid.uuid4().hex[:6]}"
    events = _events(seed=3, days=3)
    producer = KafkaProducer(**kafka.kafka_python_config(), enable_idempotence=False)
    for i, event in enumerate(events):
        key = [event.user_id.encode(), None, b"someone-else", f"k{i}".encode()][i % 4]
        producer.send(topics.name("search"), key=key, value=encode(event))
    producer.flush()
    producer.close()
    worker = Worker(kafka, topics, app_id, tmp_path)
    workers.append(worker)
    worker.start()
    changelog = f"{app_id}-sessions-changelog"
    assert wait_until(_applied(kafka, changelog, len(events)), 90, 1.0), worker.log.read_text()
    states, _ = _latest_states(kafka, changelog)
    assert {u: s.version for u, s in states.items()} == dict(Counter(e.user_id for e in events))
    assert worker.stop() == 0


_CRASHING_WORKER = """
import sys
from aigq.logging import configure_logging
from aigq.settings import KafkaSettings, TopicSettings, WebSettings, load
from streams.processor import Drained, SessionProcessor
from streams.settings import StreamSettings
from streams.worker import SessionWorker

class Broken(SessionProcessor):  # a bug in the flush path, as a crash would meet it
    def drain(self, allow: int | None = None) -> Drained:
        if self.dirty and sys.argv[1] == "flush":
            raise RuntimeError("a bug in drain")
        return super().drain(allow)

configure_logging("INFO")
w = SessionWorker(load(KafkaSettings), load(TopicSettings), load(WebSettings), load(StreamSettings))
p = w.processor
w.processor = Broken(p.config, p.policy, p._load)
real, seen = w.gaps.check, [0]

def check(tp, offset, now):  # a bug in the agent's loop, after it took records it never acked
    seen[0] += 1
    if seen[0] > 3 and sys.argv[1] == "agent":
        raise RuntimeError("a bug in the agent")
    return real(tp, offset, now)

w.gaps.check = check
w.run()
"""


@pytest.mark.parametrize("where", ["flush", "agent"])
def test_a_crashed_agent_makes_the_worker_unready_and_exit_non_zero(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[Worker], where: str
) -> None:
    # Seen: after a crash in the agent, the worker hung on SIGTERM in Faust's wait_empty (the
    # records the agent took were never acked); now it exits by itself either way.
    worker = Worker(kafka, topics, f"crash-{uuid.uuid4().hex[:6]}", tmp_path)
    workers.append(worker)
    with worker.log.open("wb") as log:
        worker.proc = subprocess.Popen(
            [sys.executable, "-c", _CRASHING_WORKER, where], env=worker.env, stdout=log, stderr=log
        )
    assert wait_until(lambda: worker.get("/ready")[0] == 200, 60), worker.log.read_text()
    _produce(kafka, topics, _events(seed=4, days=1)[:5])
    # It stops by itself, non-zero, without being asked.
    assert wait_until(lambda: worker.proc is not None and worker.proc.poll() is not None, 60)
    assert worker.proc.returncode not in (0, None), worker.log.read_text()[-2000:]
    assert "session agent crashed" in worker.log.read_text()


def test_consumer_lag_after_a_restart_counts_from_the_committed_offset(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[Worker]
) -> None:
    # Before: a restarted worker reported each partition's whole log as lag until it applied
    # a record there (83,610 against a real lag of 0).
    app_id = f"lag-{uuid.uuid4().hex[:6]}"
    events = _events(seed=5, days=3)
    _produce(kafka, topics, events)
    changelog = f"{app_id}-sessions-changelog"
    first = Worker(kafka, topics, app_id, tmp_path)
    workers.append(first)
    first.start()
    assert wait_until(_applied(kafka, changelog, len(events)), 90, 1.0), first.log.read_text()
    assert first.stop() == 0
    second = Worker(kafka, topics, app_id, tmp_path)
    workers.append(second)
    second.start()
    assert wait_until(lambda: second.get("/ready")[0] == 200, 60), second.log.read_text()

    def lags() -> dict[str, float]:
        _, body = second.get("/metrics")
        return {
            line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in (body or b"").decode().splitlines()
            if line.startswith("aigq_stream_consumer_lag{")
        }

    assert wait_until(lambda: len(lags()) == topics.partitions * 4, 30), lags()
    assert set(lags().values()) == {0.0}, lags()
    assert second.stop() == 0


def test_a_full_disk_under_stderr_and_redis_down_do_not_stop_the_worker(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[Worker]
) -> None:
    # Seen: with stderr on a full disk and Redis down, the worker exited 1 (its warning about
    # the recent triggers could not be written). Logging must never take it down.
    app_id = f"full-{uuid.uuid4().hex[:6]}"
    events = _events(seed=6, days=2)
    _produce(kafka, topics, events)
    env = {
        "AIGQ_STREAM_RECENT_TRIGGERS": "true",
        "AIGQ_STREAM_HISTORY": "true",
        "AIGQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    worker = Worker(kafka, topics, app_id, tmp_path, env)
    workers.append(worker)
    worker.start(stderr=Path("/dev/full"))
    changelog = f"{app_id}-sessions-changelog"
    assert wait_until(_applied(kafka, changelog, len(events)), 90, 1.0)
    assert worker.proc is not None and worker.proc.poll() is None  # still running
    assert worker.get("/ready")[0] == 200
    assert worker.stop() == 0
