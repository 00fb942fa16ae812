"""docs/settings.md is what the settings classes say (regenerate: python -m shell.settings_doc)."""

from __future__ import annotations

from shell.settings_doc import COMPONENTS, PATH, render


def test_the_settings_page_is_generated_from_the_classes() -> None:
    assert PATH.read_text() == render(), "run: python -m shell.settings_doc"


def test_every_variable_of_every_component_is_on_the_page() -> None:
    page = render()
    for cls, _ in COMPONENTS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name in cls.model_fields:
            assert f"`{prefix}{name.upper()}`" in page
