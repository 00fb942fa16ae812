"""The learning demo's pure parts: served CTR per model version, the run's own registry."""

from __future__ import annotations

from pathlib import Path

from aigq.events import HintClickEvent, HintExposureEvent, ShownQuery
from aigq.registry import Registry
from shell.e2e.cli_learn import seed_registry
from shell.e2e.report import NO_RUN, VersionCtr, served_ctr

TS = 1_796_000_000_000


def _exposure(user: str, request: str, version: str | None) -> HintExposureEvent:
    shown = (ShownQuery(query="maps", source="u2q", position=0),)
    return HintExposureEvent(
        user_id=user, ts=TS, request_id=request, shown=shown, model_version=version
    )


def _click(user: str, request: str) -> HintClickEvent:
    return HintClickEvent(
        user_id=user, ts=TS + 1, request_id=request, query="maps", source="u2q", position=0
    )


def test_served_ctr_counts_clicked_exposures_per_model_version() -> None:
    exposures = [
        _exposure("u1", "r1", "aigq-direct@v0001"),
        _exposure("u1", "r2", "aigq-direct@v0001"),
        _exposure("u2", "r3", "aigq-direct@v0002"),
        _exposure("u3", "r4", None),
    ]
    # two clicks on one exposure count once; a click of another user's request id counts none
    clicks = [_click("u1", "r1"), _click("u1", "r1"), _click("u2", "r3"), _click("u9", "r2")]
    assert served_ctr(exposures, clicks) == [
        VersionCtr(NO_RUN, 1, 0),
        VersionCtr("aigq-direct@v0001", 2, 1),
        VersionCtr("aigq-direct@v0002", 1, 1),
    ]
    assert served_ctr(exposures, clicks)[1].ctr == 0.5


def test_the_demo_seeds_its_own_registry_with_the_starting_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "manifest.json").write_text('{"kind": "il-sft", "version": "v0007"}')
    tag = seed_registry(tmp_path / "registry", model)
    assert tag == "aigq-direct@v0001"
    ref = Registry(tmp_path / "registry", shipped=None).resolve("aigq-direct")
    assert ref.version == "v0001"
    assert (ref.path / "config.json").is_file()
    assert ref.manifest()["kind"] == "il-sft"
    assert ref.manifest()["version"] == "v0001"
