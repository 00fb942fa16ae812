"""The real AOL log (read in place, never copied): proxy samples and baselines give sane figures.

200 of the 800 users, to keep it to seconds. The data README quotes HR@1 ~ 0.11 and HR@10 ~ 0.24
for "the user's most frequent past queries" predicting each user's last search.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aigq.datasets.aol import iter_aol
from generators.output import parse_queries
from generators.prompt import COPY_TOKENS, shown_history
from training.baselines import Baseline, CoOccurrence, MostPopular, UserFrequent
from training.metrics import EvalConfig, evaluate
from training.samples import last_search_samples
from training.split import SplitConfig, is_heldout, split_samples

CUT = int(datetime(2006, 5, 15, tzinfo=UTC).timestamp() * 1000)


def test_aol_proxy_samples_and_baselines(data_dir: Path) -> None:
    items = list(iter_aol(data_dir / "aol", max_users=200))
    config = SplitConfig(cut_ms=CUT, heldout_fraction=0.2)
    split = split_samples(items, config)
    assert len(split.train) > 5_000
    assert len(split.test) >= 20
    assert not {s.context.user_id for s in split.train} & {s.context.user_id for s in split.test}
    assert all(is_heldout(s.context.user_id, 0.2, config.salt) for s in split.test)
    assert all(s.context.last_ts < CUT for s in split.train)
    for sample in split.train[:: len(split.train) // 50]:
        target, shown = sample.target(), shown_history(sample.prompt())
        lines = [shown[COPY_TOKENS.index(q)] if q in COPY_TOKENS else q for q in target.split("\n")]
        assert parse_queries(target, shown=shown) == (lines if target else [])
        assert sample.prompt().endswith("} Output:")

    hr: dict[str, float] = {}
    models: dict[str, Baseline] = {
        "popular": MostPopular(),
        "user": UserFrequent(),
        "cooccurrence": CoOccurrence(),
    }
    for name, model in models.items():
        model.fit(split.train)
        predictions = [model.predict(s.context, 10) for s in split.test]
        report = evaluate(split.test, predictions, EvalConfig(ks=(1, 10)))
        hr[name] = report["hr@10"]
        assert report["distinct@10"] > 5
    print("held-out HR@10 over the label window:", hr)
    assert hr["user"] > hr["popular"] > 0.0
    assert hr["cooccurrence"] > 0.0

    last = last_search_samples(items)
    user = UserFrequent()
    report = evaluate(last, [user.predict(s.context, 10) for s in last], EvalConfig(ks=(1, 10)))
    print("last search, user's frequent queries:", report)
    assert len(last) > 190
    assert 0.05 < report["hr_next@1"] < 0.25
    assert 0.15 < report["hr_next@10"] < 0.4
