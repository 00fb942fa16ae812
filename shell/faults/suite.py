"""The fault scenarios by name, and running a selection of them, each on a loop of its own."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shell.e2e.stack import LoopConfig, ModelServer, arm_config
from shell.faults.broker import broker_restart
from shell.faults.clients import slow_clients
from shell.faults.figures import Figures
from shell.faults.inputs import clock_skew, poison
from shell.faults.kills import worker_kills
from shell.faults.outages import backend_down, redis_restart
from shell.faults.stage import Options, Stage


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    body: Callable[[Stage], None]


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("worker-kill", "kill -9 of aigq worker mid-stream, restarted each time",
                 worker_kills),
        Scenario("redis-restart", "the loop's Redis killed and restarted while events flow",
                 redis_restart),
        Scenario("backend-down", "the model server down for seconds, then back; SIGTERM to "
                 "aigq generate while it is down", backend_down),
        Scenario("broker-restart", "tansu (memory storage) killed and restarted: a reset log",
                 broker_restart),
        Scenario("poison", "malformed, mistyped, oversized, mis-keyed records; a request of "
                 "version 2**63", poison),
        Scenario("clock-skew", "events dated 2099, 1,100 days after the last, and long ago",
                 clock_skew),
        Scenario("slow-clients", "silent and slow-loris connections against aigq serve",
                 slow_clients),
    )
}  # fmt: skip


def run_scenario(
    scenario: Scenario,
    base: LoopConfig,
    model: ModelServer,
    options: Options,
    say: Callable[[str], None],
) -> Figures:
    """One scenario on a loop of its own (its own prefix and state folder). A scenario that
    breaks (a loop that does not start, an error of the suite's) fails with the reason."""
    figures = Figures(scenario.name)
    stage = Stage(scenario.name, arm_config(base, scenario.name), model, options, say, figures)
    started = time.monotonic()
    say(f"{scenario.name}: {scenario.what}")
    try:
        scenario.body(stage)
    except Exception as exc:  # noqa: BLE001 - reported as the scenario's failure, suite goes on
        figures.failures.append(f"the scenario broke: {exc!r}"[:300])
        figures.note("".join(traceback.format_exception(exc))[-1500:])
    figures.seconds = time.monotonic() - started
    say(f"{scenario.name}: {figures.verdict} ({figures.seconds:.0f} s)")
    return figures


def run_suite(
    names: Sequence[str],
    base: LoopConfig,
    model: ModelServer,
    options: Options,
    say: Callable[[str], None] = print,
) -> list[Figures]:
    return [run_scenario(SCENARIOS[n], base, model, options, say) for n in names]
