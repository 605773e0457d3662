"""Parsing "N/period" rate limits, and the settings' defaults parse."""

from __future__ import annotations

import pytest

from ragledger.api.rate_limits import (
    SCOPE_SETTINGS,
    RateLimits,
    RateScope,
    parse_rate,
    rate_limited,
)
from ragledger.core.settings import Settings

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@pytest.mark.parametrize(
    ("text", "limit", "interval_ms"),
    [
        ("10/second", 10, SECOND),
        ("30/minute", 30, MINUTE),
        ("60/hour", 60, HOUR),
        ("1000/day", 1000, DAY),
        ("10/15minute", 10, 15 * MINUTE),
        ("5/2hours", 5, 2 * HOUR),
        (" 3 / 30 seconds ", 3, 30 * SECOND),
        ("7/Minute", 7, MINUTE),
        ("1/1day", 1, DAY),
    ],
)
def test_good_rates(text: str, limit: int, interval_ms: int):
    rate = parse_rate(text)
    assert (rate.limit, rate.interval) == (limit, interval_ms)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'N/period'"),
        ("10", "expected 'N/period'"),
        ("10/fortnight", "expected 'N/period'"),
        ("ten/minute", "expected 'N/period'"),
        ("-1/minute", "expected 'N/period'"),
        ("10/1.5minute", "expected 'N/period'"),
        ("10/minute;100/hour", "expected 'N/period'"),
        ("١٠/minute", "expected 'N/period'"),  # non-ASCII digits
        ("0/minute", "the count must be at least 1"),
        ("10/0minute", "the period multiplier must be at least 1"),
    ],
)
def test_bad_rates(text: str, message: str):
    with pytest.raises(ValueError, match="invalid rate limit") as caught:
        parse_rate(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value)


def test_settings_defaults_cover_every_scope():
    settings = Settings(redis_url=None)
    limits = RateLimits.from_settings(settings)
    assert set(limits.rates) == {scope.value for scope in RateScope}
    assert limits.backend == "memory"
    assert limits.rates["login_account"].limit == 10
    assert limits.rates["login_account"].interval == 15 * MINUTE
    assert set(SCOPE_SETTINGS) == set(RateScope)


def test_a_bad_setting_is_named():
    settings = Settings(redis_url=None, rate_limit_upload_per_user="lots")
    with pytest.raises(ValueError, match="RATE_LIMIT_UPLOAD_PER_USER: invalid rate limit 'lots'"):
        RateLimits.from_settings(settings)


def test_unknown_scope_refused_when_the_route_is_declared():
    async def identify(request: object) -> str:
        return "x"

    with pytest.raises(ValueError, match="unknown rate limit scope 'qestions'"):
        rate_limited("qestions", identify)
