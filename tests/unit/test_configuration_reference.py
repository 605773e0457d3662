"""The configuration reference (docs/configuration.md) names every setting, and only settings."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from ragledger.core.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# Environment variables the table documents that are not fields of Settings.
NOT_SETTINGS = {
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus-client's own, set by `serve --workers N`
}


def configuration_rows(readme: str) -> list[list[str]]:
    """The cells of each body row of the table in the "## Configuration" section."""
    section = re.search(r"^# Configuration\n(.*?)(?=^#{1,2} |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert section is not None, "docs/configuration.md has no '# Configuration' section"
    lines = [line for line in section.group(1).splitlines() if line.startswith("|")]
    # The header row and the |---| separator come first.
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def documented_variables(rows: list[list[str]]) -> set[str]:
    """Every `NAME` in the first column (a row may name several, comma-separated)."""
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row[0])}


def environment_names(field_name: str, field: FieldInfo) -> set[str]:
    """The variables that set a field: its aliases, else its name (case-insensitive)."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, AliasChoices):
        return {choice.upper() for choice in alias.choices if isinstance(choice, str)}
    if isinstance(alias, str):
        return {alias.upper()}
    return {(Settings.model_config.get("env_prefix", "") + field_name).upper()}


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = documented_variables(configuration_rows(REFERENCE.read_text(encoding="utf-8")))
    missing = sorted(
        min(names)
        for field_name, field in Settings.model_fields.items()
        if not (names := environment_names(field_name, field)) & documented
    )
    assert not missing, (
        f"docs/configuration.md lacks {missing}: add a row with the default "
        "and what the setting trades"
    )


def test_the_table_documents_no_setting_that_does_not_exist() -> None:
    known = set(NOT_SETTINGS)
    for field_name, field in Settings.model_fields.items():
        known |= environment_names(field_name, field)
    documented = documented_variables(configuration_rows(REFERENCE.read_text(encoding="utf-8")))
    assert not documented - known, (
        f"docs/configuration.md documents unknown settings: {documented - known}"
    )


def test_every_row_has_a_default_and_an_explanation() -> None:
    rows = configuration_rows(REFERENCE.read_text(encoding="utf-8"))
    assert rows
    for row in rows:
        assert len(row) == 3, f"a configuration row needs 3 cells: {row}"
        variable, default, _meaning = row
        assert default, f"no default given for {variable}"


def test_aliases_and_field_names_map_to_upper_case_variables() -> None:
    fields = Settings.model_fields
    assert environment_names("data_dir", fields["data_dir"]) == {"RAGLEDGER_DATA_DIR", "DATA_DIR"}
    assert environment_names("redis_url", fields["redis_url"]) == {"REDIS_URL"}
    rows = configuration_rows(
        "# Configuration\n\n| variable | default | meaning |\n|---|---|---|\n"
        "| `A_B`, `C` | 1, 2 | x |\n\n## Next\n| `D` | 3 | y |\n"
    )
    assert documented_variables(rows) == {"A_B", "C"}
