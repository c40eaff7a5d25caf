"""The settings tables of the READMEs are what the settings classes say (``python -m tools.settings_tables``)."""

from __future__ import annotations

from tools import settings_tables


def test_the_readme_settings_tables_match_the_settings_classes():
    assert settings_tables.main(["--check"]) == 0, "run python -m tools.settings_tables"
