"""kill -9 of the session worker mid-stream, restarted each time: every event counted once.

Each round waits until the (re)started worker is ready and has taken some records, kills it
with SIGKILL (nothing flushed, nothing committed past the last flush), and starts it again
with the same environment. The events keep coming meanwhile; at the end every user's session
must count exactly the events sent for that user.
"""

from __future__ import annotations

import signal
import urllib.request

import orjson

from aigq.dev.probe import wait_until
from shell.e2e.stack import http_status
from shell.faults.stage import Run, Stage
from shell.faults.traffic import records, synthetic

RESTART_S = 13.0  # kill to ready again, here under load: Faust, table recovery, the group join


def _processed(run: Run) -> int:
    """Records the running worker took since it started (its /health), 0 when it is down."""
    url = run.loop.worker_metrics_url.replace("/metrics", "/health")
    if http_status(url) != 200:
        return 0
    with urllib.request.urlopen(url, timeout=2) as reply:
        return int(orjson.loads(reply.read())["processed"])


def worker_kills(stage: Stage) -> None:
    kills = stage.options.kills
    rate = stage.size(100, 300)
    events = int(rate * (kills * RESTART_S + 4))  # still flowing at the last kill
    with stage.loop() as run:
        batch = records(synthetic(events), run.loop.topics)
        sender = run.send(batch, rate)
        mid_stream = done = 0
        for k in range(kills):
            taking = wait_until(lambda: _processed(run) >= 50, 20, every_s=0.1)
            mid_stream += taking and sender.handed < len(batch)
            code = run.procs.kill("worker", signal.SIGKILL)
            run.figures.check(code == -signal.SIGKILL, f"kill {k + 1}: worker exit {code}")
            done += 1
            run.procs.restart("worker")
            if not run.figures.check(run.ready("worker"), f"worker not ready after kill {k + 1}"):
                break  # what it counts is still read back
            stage.say(f"{stage.name}: kill {k + 1} of {kills}, worker ready again")
        sent = sender.join()
        run.count(batch, sent, metrics=False)  # the counters restart with each process
        run.figures.note(
            f"{done} of {kills} SIGKILLs of the worker made, {mid_stream} while events were "
            "still being sent"
        )
