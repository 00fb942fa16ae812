"""The broker killed and restarted while the session worker runs.

The local broker (tansu, as ``aigq dev up`` starts it) keeps its logs in memory, so a restart
loses every topic, record and committed offset: to the worker it is a reset log, whose new
records start again at offset 0, below the offsets its sessions recorded. It must tell that
from a re-delivery (streams/resets.py) and apply every new record once. The changelog is made
again as the worker made it at its start, since a real broker would have kept it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from aigq.dev.topics import ensure_topics
from shell.faults.figures import compare
from shell.faults.procs import wait_exit
from shell.faults.stage import Stage
from shell.faults.state import metric, scrape, wait_counted, worker_applied
from shell.faults.traffic import records, synthetic


def broker_restart(stage: Stage) -> None:
    rate = stage.size(300, 600)
    before = stage.size(1_500, 6_000)
    after = before // 3  # the new log stays below the old offsets: skipping would show
    timeout = stage.options.count_timeout_s
    with stage.loop() as run:
        loop, f = run.loop, run.figures
        events = synthetic(before + after)
        first = records(events[:before], loop.topics)
        sent1 = run.send(first, rate).join()
        want1 = sent1.want(first)
        got1, monotonic = wait_counted(loop.kafka, run.changelog, want1, timeout)
        f.check(monotonic, "a session's version went down in the changelog")
        run.check_answered(timeout, when=" before the restart")  # drained first
        _, answered1 = run.answered(0)
        pid = loop.dev.broker_process.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_exit(pid, 10)
        stage.say(f"{stage.name}: broker killed; starting it again (empty)")
        time.sleep(2)
        loop.dev.up()  # the broker, empty, and the loop's topics
        ensure_topics(loop.kafka, [run.changelog], loop.topics.partitions, 1)
        second = records(events[before:], loop.topics)
        sent2 = run.send(second, rate).join()
        want2 = sent2.want(second)
        want = want1 + want2
        # Users sent after the restart: their whole count is in the new changelog. A user
        # missing there keeps the count read before the restart (what it had applied then).
        got2, _ = wait_counted(loop.kafka, run.changelog, {u: want[u] for u in want2}, timeout)
        got = {u: got2.get(u, got1.get(u, 0)) for u in want}
        got |= {u: n for u, n in got2.items() if u not in want}
        f.add(compare(want, got))
        page = scrape(loop.worker_metrics_url)
        if page is not None:
            f.applied_metrics = worker_applied(page)
            resets = metric(page, "aigq_stream_source_resets")
            f.check(resets > 0, "the worker did not find the reset log (no source reset)")
            f.note(f"source partitions found reset: {resets:.0f}")
        run.check_answered(timeout, baseline=answered1 or 0, when=" after the restart")
        f.note(f"{sum(want1.values()):,} events before the restart, {sum(want2.values()):,} "
               "after")  # fmt: skip
