"""Settings that would make the platform unsafe are refused at start-up, with the reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragledger.core.settings import Settings


@pytest.mark.parametrize("value", ["", "short", "x" * 31])
def test_an_empty_or_short_secret_key_is_refused(value: str, tmp_path) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY must be at least 32 characters"):
        Settings(secret_key=value, data_dir=tmp_path)


def test_a_long_secret_key_is_used_as_given(tmp_path) -> None:
    settings = Settings(secret_key="k" * 32, data_dir=tmp_path)
    assert settings.resolved_secret_key() == "k" * 32
    assert not (tmp_path / "secret_key").exists()


def test_no_secret_key_generates_one_into_the_data_dir_once(tmp_path) -> None:
    first = Settings(data_dir=tmp_path).resolved_secret_key()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path).resolved_secret_key() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_metrics_are_loopback_only_by_default(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.metrics_token is None
    assert settings.metrics_allowed_networks == ["127.0.0.1/32", "::1/128"]
