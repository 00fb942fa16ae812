"""Bad input: poison records and wrong clocks. Every record is applied (when valid) or
dead-lettered (when not), exactly once, and no process stops.

Poison: undecodable, mistyped, oversized records, records keyed to nobody or to another
user, a record with no value, and on ``<prefix>.regenerate`` a request of version 2**63 (it
was a poison pill of the generator) and one that is not JSON. Clock skew: an event dated
2099 between ordinary ones, one 1,100 days after the user's previous (its decay factor
overflowed once), events from long ago, and times outside the schema's range.
"""

from __future__ import annotations

import time

import orjson

from aigq.codec import encode
from aigq.events import MAX_TS_MS, MIN_TS_MS, RegenerationRequest, SearchEvent
from aigq.settings import TopicSettings
from shell.faults.stage import Run, Stage
from shell.faults.state import metric, read_topic, scrape
from shell.faults.traffic import Record, records, synthetic

DAY_MS = 86_400_000
MAX_FUTURE_MS = 300_000  # AIGQ_STREAM_MAX_FUTURE_S's default
Y2099_MS = 4_070_908_800_000  # 2099-01-01


def _search(user: str, ts: int, query: str) -> bytes:
    return encode(SearchEvent(user_id=user, ts=ts, query=query))


def poison_records(topics: TopicSettings, now: int) -> list[Record]:
    search, click, regen = topics.name("search"), topics.name("click"), topics.name("regenerate")

    def bad(topic: str, value: bytes | None, key: bytes | None = b"p1") -> Record:
        return Record(topic, key, value, None)

    raw = {"type": "search", "user_id": "p1", "ts": now, "query": "ok"}
    request = RegenerationRequest(
        user_id="p2", version=1, reason="cold_start", shift=1.0, event_ts=now, created_ts=now,
        fingerprint="f", recent=((now, "search", "shoes", ""),), profile=(("t:shoes", 1.0),),
    )  # fmt: skip
    huge = orjson.loads(encode(request)) | {"version": 2**63}
    return [
        bad(search, b'{"type": "search", "user_id": "p1", "ts": '),  # cut short
        bad(search, b"\xff\xfe\x00 not utf-8"),
        bad(search, orjson.dumps(raw | {"ts": "yesterday"})),
        bad(search, orjson.dumps(raw | {"ts": 1.5e12})),  # a float
        bad(click, orjson.dumps({"type": "click", "user_id": ["p1"], "ts": now, "item_id": "i"})),
        bad(search, orjson.dumps(raw | {"type": "purchase"})),
        bad(search, orjson.dumps(raw | {"query": "a\x00b"})),
        bad(search, orjson.dumps(raw | {"user_id": "not/an id"})),
        bad(search, orjson.dumps(raw | {"query": "big " * 25_000})),  # 100 KB: oversized
        bad(search, b"[" * 3_000 + b"]" * 3_000),  # nested deeper than a parser goes
        bad(search, b"null"),
        bad(search, b"42"),
        bad(search, None),  # no value at all
        Record(search, None, _search("p-null", now, "null key"), "p-null"),
        Record(search, b"p-victim", _search("p-other", now, "another user's key"), "p-other"),
        Record(search, b"p1", orjson.dumps(raw | {"extra": {"field": 1}}), "p1"),  # ignored
        bad(regen, orjson.dumps(huge), b"p2"),
        bad(regen, b"{not json", b"p2"),
    ]


def _interleave(valid: list[Record], odd: list[Record]) -> list[Record]:
    step = max(1, len(valid) // (len(odd) + 1))
    out: list[Record] = []
    for i, record in enumerate(odd):
        out += [*valid[i * step : (i + 1) * step], record]
    return out + valid[len(odd) * step :]


def _checked(run: Run, batch: list[Record], rate: float) -> None:
    sent = run.send(batch, rate).join()
    run.count(batch, sent)
    run.check_answered(run.stage.options.count_timeout_s)


def poison(stage: Stage) -> None:
    with stage.loop() as run:
        now = int(time.time() * 1000)
        valid = records(synthetic(stage.size(600, 3_000)), run.loop.topics)
        _checked(run, _interleave(valid, poison_records(run.loop.topics, now)), 300)


def skewed_records(topics: TopicSettings, now: int) -> list[Record]:
    search = topics.name("search")
    gap_from = now - 1_101 * DAY_MS
    plan: list[tuple[str, int, str]] = [
        ("c-future", now - 60_000, "running shoes"),
        ("c-future", Y2099_MS, "trail shoes"),
        ("c-future", now - 30_000, "rain jacket"),
        ("c-future", now, "wool socks"),
        ("c-gap", gap_from, "headphones"),
        ("c-gap", gap_from + 1_100 * DAY_MS, "coffee grinder"),
        ("c-gap", gap_from + 1_100 * DAY_MS + 60_000, "espresso beans"),
        ("c-past", MIN_TS_MS + DAY_MS, "dial-up modem"),
        ("c-past", MIN_TS_MS + 5 * 365 * DAY_MS, "pager"),
        ("c-past", now, "phone case"),
    ]
    out = [Record(search, u.encode(), _search(u, ts, q), u) for u, ts, q in plan]
    raw = {"type": "search", "user_id": "c-out", "query": "q"}
    out += [  # outside the schema's range: dead letters
        Record(search, b"c-out", orjson.dumps(raw | {"ts": 1_000}), None),
        Record(search, b"c-out", orjson.dumps(raw | {"ts": MAX_TS_MS + 1}), None),
        Record(search, b"c-out", orjson.dumps(raw | {"ts": now // 1000}), None),  # seconds
    ]
    return out


def clock_skew(stage: Stage) -> None:
    with stage.loop() as run:
        now = int(time.time() * 1000)
        valid = records(synthetic(stage.size(600, 3_000)), run.loop.topics)
        _checked(run, _interleave(valid, skewed_records(run.loop.topics, now)), 300)
        bound = int(time.time() * 1000) + MAX_FUTURE_MS + 60_000
        ahead = []
        for record in read_topic(run.loop.kafka, run.loop.topics.name("regenerate")):
            request = RegenerationRequest.model_validate_json(record.value)
            newest = max(request.event_ts, request.watermark_ts or 0)
            if newest > bound:
                ahead.append(f"{request.user_id}@{newest}")
        run.figures.check(not ahead, f"requests dated past now + 5 min: {', '.join(ahead[:3])}")
        page = scrape(run.loop.worker_metrics_url) or ""
        clamped = metric(page, "aigq_stream_clock_clamped")
        run.figures.check(clamped >= 1, "the event dated 2099 was not clamped")
        run.figures.note(f"events clamped to their record's time + 5 min: {clamped:.0f}")
