"""Which checkpoints count as a stuck subscriber: a pure rule over what the watcher read."""

from __future__ import annotations

from ragledger.projections.subscriber_alerts import (
    AlertThresholds,
    CheckpointState,
    stuck_subscribers,
)

LIMITS = AlertThresholds(failure_count=5, lag_events=100, stall_s=300)


def _state(name: str = "chunks", **changes: object) -> CheckpointState:
    values = {
        "name": name,
        "position": 1000,
        "failures": 0,
        "failing_position": None,
        "last_error": None,
        "idle_s": 0.0,
    }
    values.update(changes)
    return CheckpointState(**values)  # type: ignore[arg-type]


def test_a_healthy_subscriber_is_not_an_incident() -> None:
    assert stuck_subscribers([_state()], head=1000, thresholds=LIMITS) == []
    # Far behind but moving (a rebuild), or stopped but caught up (an idle ledger).
    assert stuck_subscribers([_state(idle_s=1.0)], head=50_000, thresholds=LIMITS) == []
    assert stuck_subscribers([_state(idle_s=9_999.0)], head=1010, thresholds=LIMITS) == []


def test_failing_at_one_position_is_an_incident_named_by_it() -> None:
    state = _state(
        failures=5,
        failing_position=1001,
        last_error="RuntimeError('question text of someone')",
    )
    [incident] = stuck_subscribers([state], head=1500, thresholds=LIMITS)
    assert (incident.subscriber, incident.kind, incident.position) == ("chunks", "failing", 1001)
    assert "failed 5 times in a row at position 1001 (RuntimeError)" in incident.summary
    # The error's message may quote event data: only its type is kept.
    assert "question text" not in incident.summary
    assert stuck_subscribers([_state(failures=4, failing_position=1001)], 1500, LIMITS) == []


def test_stalled_far_behind_is_an_incident() -> None:
    [incident] = stuck_subscribers([_state(idle_s=301.0)], head=1100, thresholds=LIMITS)
    assert (incident.kind, incident.position) == ("stalled", 1000)
    assert "100 events behind" in incident.summary


def test_one_incident_one_id_and_a_new_position_is_a_new_incident() -> None:
    a = stuck_subscribers([_state(failures=5, failing_position=7)], 10, LIMITS)[0]
    b = stuck_subscribers([_state(failures=9, failing_position=7)], 20, LIMITS)[0]
    c = stuck_subscribers([_state(failures=5, failing_position=8)], 20, LIMITS)[0]
    other = stuck_subscribers([_state("documents", failures=5, failing_position=7)], 20, LIMITS)
    assert a.anomaly_id == b.anomaly_id
    assert a.anomaly_id != c.anomaly_id
    assert a.anomaly_id != other[0].anomaly_id
