"""Outages of what the loop depends on, while events flow: its Redis killed and restarted,
and the model server down for some seconds (with SIGTERM to the generator while it is down).

The outage's length is a deliberate wait (``time.sleep``); everything after it polls with a
deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import replace

from aigq.dev.probe import free_port, wait_until
from aigq.events import SearchEvent
from aigq.settings import RedisSettings
from shell.e2e.stack import ModelServer
from shell.faults.procs import wait_exit
from shell.faults.proxy import Proxy
from shell.faults.stage import Run, Stage
from shell.faults.state import metric, scrape
from shell.faults.traffic import Record, Sent, records, synthetic

STOP_PROMPTLY_S = 10.0  # SIGTERM to exit, for the generator with its backend down
GRACE_S = 5.0  # after an outage ends, the read API answers again within this


def _generator_metric(run: Run, name: str) -> float | None:
    page = scrape(run.loop.generator_metrics_url)
    return None if page is None else metric(page, name)


def _kill(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_exit(pid, 10)


def redis_restart(stage: Stage) -> None:
    down_s = stage.size(3, 10)
    rate = stage.size(150, 300)
    own = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")  # the dev stack starts it
    with stage.loop(replace(stage.config, redis=own)) as run:
        redis = run.loop.dev.redis_process
        batch = records(synthetic(int(rate * (down_s + 8))), run.loop.topics)
        users = sorted({r.user for r in batch if r.user})[:50]
        prober = run.probe(users)
        sender = run.send(batch, rate)
        wait_until(lambda: sender.handed >= len(batch) // 4, 30)
        written_before = _generator_metric(run, "aigq_generate_written_total") or 0
        _kill(redis.pid())
        stage.say(f"{stage.name}: Redis killed, back in {down_s} s")
        time.sleep(down_s)
        run.loop.dev.up()  # a new, empty Redis on the same port
        back = time.monotonic()
        sent = sender.join()
        run.count(batch, sent)
        run.check_answered(stage.options.count_timeout_s, when=" after Redis came back")
        f = run.figures
        written = (_generator_metric(run, "aigq_generate_written_total") or 0) - written_before
        f.check(written > 0, "no list written to the u2q cache after Redis came back")
        wait_until(lambda: prober.failed(since=back + GRACE_S) == 0 and
                   prober.answers[-1].status == 200, 10)  # fmt: skip
        late = prober.failed(since=back + GRACE_S)
        f.check(late == 0, f"{late} read-API requests failed {GRACE_S:.0f} s after Redis was back")
        f.note(
            f"Redis down {down_s} s; read-API requests that failed during the outage are "
            f"expected (503); {int(written)} lists written after it"
        )


def _new_users(n: int) -> list[SearchEvent]:
    now = int(time.time() * 1000)
    return [SearchEvent(user_id=f"down{i}", ts=now, query=f"query {i}") for i in range(n)]


def backend_down(stage: Stage) -> None:
    if not stage.model.url:
        stage.figures.skipped = "the model runs inside the generator (transformers)"
        return
    down_s = stage.size(5, 20)
    rate = stage.size(150, 300)
    with Proxy(stage.model.url) as proxy:
        model = ModelServer(
            stage.model.model, stage.model.model_version, stage.model.state_dir, url=proxy.url
        )
        with stage.loop(model=model) as run:
            f = run.figures
            batch = records(synthetic(int(rate * (down_s + 6))), run.loop.topics)
            sender = run.send(batch, rate)
            wait_until(lambda: sender.handed >= len(batch) // 4, 30)
            proxy.down()
            stage.say(f"{stage.name}: model server down for {down_s} s")
            until = time.monotonic() + down_s
            paused = wait_until(
                lambda: _generator_metric(run, "aigq_generate_paused") == 1, down_s, every_s=0.2
            )
            time.sleep(max(0.0, until - time.monotonic()))
            proxy.up()
            sent = sender.join()
            run.check_answered(stage.options.count_timeout_s, when=" after the backend was back")
            f.check(paused, "the generator never showed paused while the backend was down")
            # SIGTERM while it waits for a backend that is down, holding a batch.
            proxy.down()
            extra = records(_new_users(8), run.loop.topics)
            more = run.send(extra, 50).join()
            held = wait_until(
                lambda: _generator_metric(run, "aigq_generate_paused") == 1, 30, every_s=0.2
            )
            f.check(held, "the generator did not wait for the backend (no paused) before SIGTERM")
            started = time.monotonic()
            code = run.procs.kill("generate", signal.SIGTERM, timeout_s=STOP_PROMPTLY_S)
            took = time.monotonic() - started
            if code is None:
                f.unstoppable.append(f"generate (SIGTERM, backend down, {STOP_PROMPTLY_S:.0f} s)")
                run.procs.kill("generate")
            elif code not in (0, -signal.SIGTERM):
                f.crashed.append(f"generate (exit {code} on SIGTERM, backend down)")
            f.note(f"SIGTERM to aigq generate with the backend down: exit {code} in {took:.1f} s")
            proxy.up()
            _count_both(run, batch, sent, extra, more)


def _count_both(run: Run, first: list[Record], a: Sent, second: list[Record], b: Sent) -> None:
    both = Sent(a.origins + b.origins, a.errors + b.errors)
    run.count(first + second, both)
