"""The rules and severities an `AnomalyDetected` event records, as enums.

Below the services that apply the rules (`services/anomaly_rules.py`) and the HTTP
schemas that show them, so both name them without importing each other.
"""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """How urgent an anomaly is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Rule(StrEnum):
    """The rules, by the name recorded in AnomalyDetected."""

    QUESTION_RATE = "question_rate"
    REPEATED_AUTH_FAILURES = "repeated_auth_failures"
    LARGE_AUDIT_READ = "large_audit_read"
    UNCITED_ANSWER = "uncited_answer"
    UNSUPPORTED_ANSWERS = "unsupported_answers"
    PROMPT_INJECTION = "prompt_injection"
    LEDGER_VERIFICATION_FAILED = "ledger_verification_failed"
