"""The model registry on a temporary folder: versions, publishing, LATEST, resolving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigq.errors import RegistryError
from aigq.registry import MANIFEST, Registry


def test_versions_count_up_and_latest_follows_publishing(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.latest("m") is None and reg.versions("m") == []
    first = reg.reserve("m")
    second = reg.reserve("m")
    assert (first.version, second.version) == ("v0001", "v0002")
    assert reg.versions("m") == []  # reserved, not published: invisible
    reg.publish(first, {"metrics": {"loss": 1.5}, "parent": None})
    latest = reg.latest("m")
    assert latest is not None and latest.version == "v0001"
    reg.publish(second, {"metrics": {"loss": 1.2}, "parent": first.tag})
    assert reg.versions("m") == ["v0001", "v0002"]
    newest = reg.resolve("m")
    assert newest.version == "v0002"
    assert newest.manifest()["parent"] == "m@v0001"
    assert newest.manifest()["name"] == "m"
    assert reg.resolve("m@v0001").manifest()["metrics"] == {"loss": 1.5}


def test_reserve_takes_the_next_number_after_the_folders_present(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    a = reg.reserve("m")
    (a.path).rmdir()  # a trainer that crashed before writing anything, then was cleaned up
    b = reg.reserve("m")
    c = reg.reserve("m")
    assert b.version == "v0001" and c.version == "v0002"


def test_resolve_takes_a_model_folder_and_explains_what_is_missing(tmp_path: Path) -> None:
    folder = tmp_path / "somewhere" / "my-model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    ref = Registry(tmp_path / "reg").resolve(str(folder))
    assert ref.path == folder.resolve() and ref.version == "external"
    # an unpublished version folder of a registry is named by its owner too
    registry = Registry(tmp_path / "reg")
    candidate = registry.reserve("cand")
    (candidate.path / "config.json").write_text("{}")
    assert registry.resolve(str(candidate.path)).tag == f"cand/{candidate.version}@external"
    with pytest.raises(RegistryError, match="aigq train sft"):
        Registry(tmp_path / "reg", shipped=None).resolve("aigq-direct")
    with pytest.raises(RegistryError, match="not in the registry"):
        Registry(tmp_path / "reg").resolve("aigq-direct@v0009")
    with pytest.raises(RegistryError, match="model name"):
        Registry(tmp_path / "reg").resolve("../etc")


def test_the_shipped_default_serves_until_one_is_trained_here(tmp_path: Path) -> None:
    shipped = tmp_path / "repo" / "models" / "aigq-direct"
    shipped.mkdir(parents=True)
    (shipped / "manifest.json").write_text(json.dumps({"name": "aigq-direct"}))
    reg = Registry(tmp_path / "reg", shipped=shipped)
    ref = reg.resolve("aigq-direct")
    assert (ref.path, ref.tag) == (shipped, "aigq-direct@shipped")
    assert reg.latest("other") is None  # no models/other beside it
    think = shipped.parent / "aigq-think"
    think.mkdir()
    (think / "manifest.json").write_text(json.dumps({"name": "aigq-think"}))
    assert reg.resolve("aigq-think").tag == "aigq-think@shipped"  # a folder beside it
    mine = reg.reserve("aigq-direct")
    reg.publish(mine, {"metrics": {}})
    assert reg.resolve("aigq-direct").path == mine.path


def test_an_installed_package_finds_the_default_where_the_image_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "app" / "models" / "aigq-direct"
    shipped.mkdir(parents=True)
    (shipped / "manifest.json").write_text(json.dumps({"name": "aigq-direct"}))
    monkeypatch.setenv("AIGQ_SHIPPED_MODEL", str(shipped))
    assert Registry(tmp_path / "reg").resolve("aigq-direct").path == shipped
    assert Registry(tmp_path / "reg", shipped=None).latest("aigq-direct") is None


def test_a_broken_manifest_is_a_clear_error(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    ref = reg.publish(reg.reserve("m"), {})
    (ref.path / MANIFEST).write_text("{not json")
    with pytest.raises(RegistryError, match="no readable manifest"):
        ref.manifest()


def test_aigq_generate_loads_the_registrys_latest_model_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generators.cli import _local_model
    from generators.settings import GeneratorSettings

    monkeypatch.setenv("AIGQ_MODEL_REGISTRY", str(tmp_path))
    reg = Registry()
    ref = reg.publish(reg.reserve("aigq-direct"), {"metrics": {}})
    settings = _local_model(GeneratorSettings(backend="transformers"))
    assert settings.model == str(ref.path) and settings.version == "aigq-direct@v0001"
    served = GeneratorSettings(backend="vllm-http")  # the server decides what it serves
    assert _local_model(served) is served
    with pytest.raises(RegistryError, match="no published"):
        _local_model(GeneratorSettings(backend="transformers", model="other"))


def test_set_latest_points_latest_at_a_published_version_only(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    first = reg.publish(reg.reserve("m"), {})
    reg.publish(reg.reserve("m"), {})
    unpublished = reg.reserve("m")
    assert reg.set_latest("m", "v0001") == first
    latest = reg.latest("m")
    assert latest is not None and latest.version == "v0001"
    assert (tmp_path / "m" / "LATEST").read_text() == "v0001\n"
    assert not (tmp_path / "m" / ".LATEST.tmp").exists()  # written by rename
    with pytest.raises(RegistryError, match="not in the registry"):
        reg.set_latest("m", unpublished.version)
    with pytest.raises(RegistryError, match="not in the registry"):
        reg.set_latest("m", "v0042")
    assert reg.resolve("m").version == "v0001"
