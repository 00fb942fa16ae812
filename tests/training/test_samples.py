"""Sample construction: Direct, Think and proxy sessions, the context as the worker's request,
the target text as the output parser reads it."""

from __future__ import annotations

import pytest

from aigq.codec import encode
from aigq.datasets.base import Malformed
from aigq.events import (
    ClickEvent,
    HintClickEvent,
    HintExposureEvent,
    RegenerationRequest,
    SearchEvent,
    ShownQuery,
)
from generators.output import parse_queries
from generators.prompt import compressed_prompt
from generators.requests import prompt_for
from streams.processor import SessionProcessor
from streams.session import SessionConfig
from streams.triggers import TriggerPolicy
from training import TrainingError
from training.samples import (
    AnyEvent,
    Context,
    SampleConfig,
    direct_samples,
    group_by_user,
    history_first,
    last_search_samples,
    proxy_samples,
    query_key,
    rank_searches,
    recurring_first,
    render_target,
    think_samples,
)

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_767_225_600_000 + 9 * HOUR  # 2026-01-01T09:00Z


def search(ts: int, query: str, user: str = "u1") -> SearchEvent:
    return SearchEvent(user_id=user, ts=ts, query=query)


def click(ts: int, text: str, category: tuple[str, ...] = (), user: str = "u1") -> ClickEvent:
    return ClickEvent(
        user_id=user, ts=ts, item_id=f"item-{text}", item_text=text, category=category
    )


def exposure(ts: int, request: str, queries: list[str], user: str = "u1") -> HintExposureEvent:
    shown = tuple(ShownQuery(query=q, source="u2q", position=i) for i, q in enumerate(queries))
    return HintExposureEvent(user_id=user, ts=ts, request_id=request, shown=shown)


def hint_click(
    ts: int, request: str, query: str, position: int, user: str = "u1"
) -> HintClickEvent:
    return HintClickEvent(
        user_id=user, ts=ts, request_id=request, query=query, source="u2q", position=position
    )


def test_query_key_is_the_models_text_in_the_read_paths_normal_form() -> None:
    assert query_key("  Running   Shoes ") == "running shoes"
    assert query_key("\uff32\uff35\uff2e") == "run"  # full-width letters, NFKC
    assert query_key("tv|stand") == "tv stand"  # the model cannot say "|"
    assert query_key("<>") == ""


def test_render_target_round_trips_through_the_output_parser() -> None:
    labels = [
        "Running Shoes",
        "iPhone 17 Case",
        "running  shoes",  # the same query
        "x" * 70,  # longer than the parser takes: left out, not cut
        "shoes running",  # the parser's near-duplicate of the first
        "a;;b",  # would split in two
        "ps5 controller",
    ]
    text = render_target(labels)
    assert text == "running shoes\niphone 17 case\nps5 controller"
    assert parse_queries(text) == ["running shoes", "iphone 17 case", "ps5 controller"]
    assert render_target(labels, k=2) == "running shoes\niphone 17 case"
    marked = render_target(["1. 2. smart tv", "- hdmi"])  # list markers: reach the fixpoint
    assert parse_queries(marked) == marked.split("\n") == ["smart tv", "hdmi"]
    assert render_target([]) == ""
    with pytest.raises(TrainingError):
        render_target(labels, k=0)


def test_rank_searches_by_frequency_then_clicks_then_first_seen() -> None:
    window: list[AnyEvent] = [
        search(T0, "b"),
        search(T0 + 1, "Apple"),
        search(T0 + 2, "c"),
        click(T0 + 3, "c page"),
        click(T0 + 4, "c page 2"),
        search(T0 + 5, "d"),
        click(T0 + 6, "d page"),
        search(T0 + 7, "apple"),  # the same query as "Apple": two searches
        hint_click(T0 + 8, "r", "hint", 0),  # clicks after a hint click belong to no search
        click(T0 + 9, "lost"),
    ]
    assert rank_searches(window) == ["Apple", "c", "d", "b"]


def test_direct_sample_is_an_exposure_with_a_clicked_hint() -> None:
    events: list[AnyEvent] = [
        search(T0, "running shoes"),
        click(T0 + MIN, "Nike Pegasus 40", ("Sports", "Running Shoes")),
        exposure(T0 + 10 * MIN, "r1", ["trail shoes", "running socks", "gym bag"]),
        hint_click(T0 + 11 * MIN, "r1", "gym bag", 2),
        hint_click(T0 + 12 * MIN, "r1", "running socks", 1),
        search(T0 + 13 * MIN, "gym bag black"),
        exposure(T0 + 20 * MIN, "r2", ["yoga mat"]),  # never clicked: no session
        hint_click(T0 + 30 * MIN, "r3", "tent", 0),  # before its exposure: not counted
        exposure(T0 + 31 * MIN, "r3", ["tent"]),
    ]
    [sample] = direct_samples(events)
    assert sample.kind == "direct"
    assert sample.labels == ("gym bag", "running socks", "trail shoes")
    context = sample.context
    assert context.cut_ms == T0 + 10 * MIN
    assert [b[1:3] for b in context.recent] == [
        ("search", "running shoes"),
        ("click", "Nike Pegasus 40"),
    ]
    assert context.recent[1][3] == "Sports>Running Shoes"
    assert context.searches == ("running shoes",)
    assert sample.next_query == "gym bag black"
    assert sample.target() == "gym bag\nrunning socks\ntrail shoes"
    assert "gym bag" not in sample.prompt()  # the labels are not in the input


def test_think_sample_is_a_user_day_from_its_first_search() -> None:
    day2 = T0 + DAY
    events: list[AnyEvent] = [
        search(T0, "tv"),  # day 1: nothing before it, so no sample
        click(T0 + MIN, "Samsung 55in TV", ("TV", "LED")),
        click(day2, "HDMI cable 2m", ("Cables",)),  # day 2, before its first search: context
        search(day2 + MIN, "hdmi cable"),
        click(day2 + 2 * MIN, "HDMI cable 3m", ("Cables",)),
        search(day2 + 3 * MIN, "4k tv"),
        search(day2 + 4 * MIN, "HDMI cable"),
        exposure(day2 + 5 * MIN, "r1", ["wall mount", "soundbar", "4k tv"]),
        hint_click(day2 + 6 * MIN, "r1", "wall mount", 0),
        click(T0 + 2 * DAY, "Soundbar X", ("Audio",)),  # day 3: no search, no sample
    ]
    seen: list[Context] = []

    def generator(context: Context) -> list[str]:
        seen.append(context)
        return ["tv stand", "Soundbar"]

    [sample] = think_samples(events, generator=generator)
    assert sample.kind == "think"
    assert sample.labels == ("wall mount", "hdmi cable", "4k tv", "soundbar", "tv stand")
    assert seen == [sample.context]
    assert sample.context.cut_ms == day2 + MIN
    assert sample.context.last_ts == day2  # the pre-search click is in, the search is not
    assert sample.context.searches == ("tv",)
    assert sample.next_query == "hdmi cable"
    blank = search(T0 + 3 * DAY, "<>")  # day 4: a search that says nothing: no labels, no sample
    assert [s.labels for s in think_samples([*events, blank])] == [
        ("wall mount", "hdmi cable", "4k tv", "soundbar")
    ]


def test_proxy_samples_cut_every_user_at_one_time() -> None:
    cut = T0 + DAY
    config = SampleConfig(window_ms=DAY)
    events: list[AnyEvent] = [
        search(T0, "old query", user="a"),
        click(T0 + 1, "old page", user="a"),
        search(cut, "at the cut", user="a"),  # at the cut: a label, not context
        search(cut + HOUR, "Later", user="a"),
        search(cut + 2 * HOUR, "later", user="a"),
        search(cut + DAY, "past the window", user="a"),
        search(T0, "only before", user="b"),  # nothing in the window: no sample
        search(cut + HOUR, "new user", user="c"),  # nothing before the cut: no sample
    ]
    [sample] = proxy_samples(events, cut, config)
    assert sample.context.user_id == "a"
    assert sample.labels == ("Later", "at the cut")
    assert sample.next_query == "at the cut"
    assert sample.context.searches == ("old query",)
    assert max(b[0] for b in sample.context.recent) < cut
    cold = SampleConfig(window_ms=DAY, min_context=0)
    assert {s.context.user_id for s in proxy_samples(events, cut, cold)} == {"a", "c"}


def test_last_search_samples_predict_each_users_last_search() -> None:
    events: list[AnyEvent] = [
        search(T0, "weather", user="a"),
        search(T0 + HOUR, "news", user="a"),
        search(T0 + 2 * HOUR, "weather", user="a"),
        click(T0 + 2 * HOUR + 1, "weather.com", user="a"),
        search(T0, "lonely", user="b"),  # one search: no context before it
    ]
    [sample] = last_search_samples(events)
    assert sample.labels == ("weather",)
    assert sample.context.searches == ("weather", "news")


def test_context_prompt_is_the_prompt_of_the_workers_own_request() -> None:
    """Feed the same events to the session agent's processor; its request's prompt is ours."""
    events: list[AnyEvent] = [
        search(T0 - 3 * DAY, "trail running"),
        click(T0 - DAY, "Salomon Speedcross 6", ("Sports", "Trail Shoes")),
        search(T0, "gore-tex jacket"),  # a novel search: the worker fires on it
    ]
    processor = SessionProcessor(SessionConfig(), TriggerPolicy(), load=lambda _user: None)
    for offset, event in enumerate(events):
        processor.process(f"aigq.{event.type}", 0, offset, encode(event))
    [(_, record)] = processor.drain().requests
    request = RegenerationRequest.model_validate_json(record)
    assert request.event_ts == T0

    [sample] = proxy_samples([*events, search(T0 + HOUR, "rain pants")], T0 + 1)
    context = sample.context
    assert context.recent == request.recent
    assert [f for f, _ in context.profile] == [f for f, _ in request.profile]
    assert context.prompt() == prompt_for(request, 10)
    assert context.prompt(5) == compressed_prompt(
        context.profile, context.recent, T0, k=5, history=context.history
    )
    assert context.history == ("gore-tex jacket", "trail running")  # the worker's fold
    assert "Searched: {<h1>gore-tex jacket<h2>trail running} Output:" in context.prompt()
    assert "<3_days_ago><search> trail running" in context.prompt()


def test_limits_and_config_checks() -> None:
    events = [search(T0 + i * MIN, f"query {i}") for i in range(40)]
    config = SampleConfig(max_history=5, max_labels=3, window_ms=HOUR)
    [sample] = proxy_samples(events, T0 + 20 * MIN, config)
    assert sample.context.searches == tuple(f"query {i}" for i in range(15, 20))
    assert sample.labels == ("query 20", "query 21", "query 22")
    assert len(sample.context.recent) == SessionConfig().max_recent
    for bad in ({"window_ms": 0}, {"max_labels": 0}, {"max_history": 0}, {"min_context": -1}):
        with pytest.raises(TrainingError):
            SampleConfig(**bad)  # type: ignore[arg-type]


def test_group_by_user_skips_malformed_and_orders_by_time() -> None:
    late, early = search(T0 + MIN, "second"), search(T0, "first")
    same = search(T0 + MIN, "third")
    users = group_by_user([late, Malformed("aol:1", "junk", "bad"), early, same])
    assert users == {"u1": [early, late, same]}


def test_rolling_proxy_samples_cut_every_week_with_the_next_weeks_searches() -> None:
    from training.samples import rolling_proxy_samples

    events = [
        search(T0, "tent"),  # day 0
        search(T0 + 3 * DAY, "stove"),
        search(T0 + 8 * DAY, "sleeping bag"),  # after the first cut (day 1)
        search(T0 + 9 * DAY, "sleeping bag"),
        search(T0 + 10 * DAY, "lantern"),
        search(T0 + 16 * DAY, "map"),  # the second cut is day 8
    ]
    samples = rolling_proxy_samples(events, every_ms=7 * DAY)
    day1 = (T0 // DAY + 1) * DAY
    assert [s.context.cut_ms for s in samples] == [day1, day1 + 7 * DAY, day1 + 14 * DAY]
    first, second, third = samples
    assert first.labels == ("stove",)  # days 1-7
    assert second.labels == ("sleeping bag", "lantern")  # days 8-14: twice, then once
    assert third.labels == ("map",)
    assert second.context.searches == ("tent", "stove")  # only what came before the cut
    assert third.context.searches == ("tent", "stove", "sleeping bag", "sleeping bag", "lantern")
    assert first.next_query == "stove" and second.next_query == "sleeping bag"
    with pytest.raises(TrainingError, match="at least a day"):
        rolling_proxy_samples(events, every_ms=HOUR)


def test_recurring_first_puts_the_history_the_labels_repeat_first() -> None:
    history = ("weather", "bank of america", "ebay", "maps")
    labels = ("pizza near me", "Ebay", "maps", "tacos", "sushi", "ramen")
    assert recurring_first(labels, history, k=10) == [
        "ebay", "maps",  # shown history the labels repeat, in the prompt's order
        "pizza near me", "tacos", "sushi",  # then up to 3 new labels
        "weather", "bank of america",  # then the rest of the history
    ]  # fmt: skip
    assert recurring_first(labels, history, k=3) == ["ebay", "maps", "pizza near me"]
    assert recurring_first((), history) == list(history)
    with pytest.raises(TrainingError):
        recurring_first(labels, history, k=0)
    # a proxy sample's target in that order, copies as their tokens
    events = [
        search(T0 - 2 * DAY, "Weather"), search(T0 - DAY, "weather"), search(T0 - DAY, "maps"),
        search(T0 + HOUR, "pizza"), search(T0 + 2 * HOUR, "maps"),
    ]  # fmt: skip
    [sample] = proxy_samples(events, T0)
    assert sample.target(order="recurring") == "<h2>\npizza\n<h1>"


def test_history_first_orders_a_proxy_target_copy_then_new_then_fill() -> None:
    history = ("weather", "bank of america", "ebay", "maps")
    labels = ("pizza near me", "Ebay", "weather")
    assert history_first(labels, history, k=4, new_slots=2) == [
        "weather", "bank of america",  # the head of the history, copied in the prompt's order
        "pizza near me", "Ebay",  # labels not in that head (new, or deeper in the history)
        "maps",  # the rest of the history
    ]  # fmt: skip
    assert history_first(labels, history, k=10) == [*history, "pizza near me"]
    assert history_first(labels, ()) == list(labels)
    with pytest.raises(TrainingError):
        history_first(labels, history, k=3, new_slots=-1)
    # a proxy sample's target is rendered in that order; the history is the worker's fold
    events = [
        search(T0 - 2 * DAY, "Weather"), search(T0 - DAY, "weather"), search(T0 - DAY, "maps"),
        search(T0 + HOUR, "pizza"), search(T0 + 2 * HOUR, "maps"),
    ]  # fmt: skip
    [sample] = proxy_samples(events, T0)
    assert sample.context.history == ("weather", "maps")
    assert sample.target() == "<h1>\n<h2>\npizza"  # copies as the prompt's copy tokens
    assert sample.target(k=2) == "pizza\n<h2>"  # a list of <= 3: labels only
