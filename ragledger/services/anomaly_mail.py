"""The mail that tells admins about an anomaly: subject, text and HTML, built from plain values."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode
from uuid import UUID

# Evidence links listed in a mail; the rest are named by position only (the anomaly
# lists at most 100, and a mail with a hundred links helps nobody).
MAX_EVIDENCE_LINKS = 10

ANOMALY_ID_HEADER = "X-Ragledger-Anomaly-Id"
POSSIBLE_DUPLICATE_HEADER = "X-Ragledger-Possible-Duplicate"


@dataclass(frozen=True, slots=True)
class AnomalyMail:
    """A composed message: subject, plain text, HTML, and headers."""

    subject: str
    text: str
    html: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class AnomalyFacts:
    """What the mail reports about one anomaly."""

    anomaly_id: UUID
    rule: str
    severity: str
    subject: str
    summary: str
    evidence_positions: Sequence[int]
    detected_at: datetime
    detected_position: int


def evidence_path(position: int) -> str:
    """The audit view path that starts at a ledger position."""
    return "/api/v1/audit/events?" + urlencode({"position_from": position})


def anomalies_path(rule: str, subject: str) -> str:
    """The admins' anomaly list, filtered to one rule and subject."""
    return "/api/v1/admin/anomalies?" + urlencode({"rule": rule, "subject": subject})


def compose_anomaly_mail(
    facts: AnomalyFacts,
    *,
    base_url: str,
    grouped_count: int,
    possible_duplicate: bool,
) -> AnomalyMail:
    """Compose the mail about `facts`; `grouped_count` earlier anomalies were not mailed."""
    base = base_url.rstrip("/")
    subject = f"[ragledger] {facts.severity.upper()} anomaly: {facts.rule} ({facts.subject})"
    if grouped_count:
        subject += f" +{grouped_count} grouped"
    if possible_duplicate:
        subject = f"[possible duplicate] {subject}"
    shown = list(facts.evidence_positions)[:MAX_EVIDENCE_LINKS]
    rest = len(facts.evidence_positions) - len(shown)
    positions_text = ", ".join(str(p) for p in facts.evidence_positions) or "none"
    list_url = base + anomalies_path(facts.rule, facts.subject)
    ack_url = f"{base}/api/v1/admin/anomalies/{facts.anomaly_id}/acknowledge"
    detected = facts.detected_at.isoformat()

    lines = [
        "ragledger detected an anomaly.",
        "",
        f"What happened: {facts.summary}",
        f"Rule:          {facts.rule}",
        f"Severity:      {facts.severity}",
        f"Subject:       {facts.subject}",
        f"Detected at:   {detected} (ledger position {facts.detected_position})",
        f"Anomaly id:    {facts.anomaly_id}",
        "",
        f"Evidence (ledger positions): {positions_text}",
    ]
    lines += [f"  {base}{evidence_path(p)}" for p in shown]
    if rest > 0:
        lines.append(f"  ... and {rest} more")
    if grouped_count:
        lines += [
            "",
            f"{grouped_count} more anomalies of this rule and subject were detected since "
            "the previous mail about it; they were grouped into this one.",
        ]
    if possible_duplicate:
        lines += [
            "",
            "An earlier attempt to send this mail was interrupted after it may have been "
            f"delivered; this may be a duplicate (same {ANOMALY_ID_HEADER} header).",
        ]
    lines += [
        "",
        f"Review: {list_url}",
        f"Acknowledge: POST {ack_url}",
    ]
    text = "\n".join(lines) + "\n"

    e = html.escape
    evidence_items = "".join(
        f'<li><a href="{e(base + evidence_path(p))}">position {p}</a></li>' for p in shown
    )
    if rest > 0:
        evidence_items += f"<li>... and {rest} more</li>"
    extra = ""
    if grouped_count:
        extra += (
            f"<p>{grouped_count} more anomalies of this rule and subject were detected since "
            "the previous mail about it; they were grouped into this one.</p>"
        )
    if possible_duplicate:
        extra += (
            "<p><strong>Possible duplicate:</strong> an earlier attempt to send this mail was "
            "interrupted after it may have been delivered.</p>"
        )
    body_html = (
        "<!doctype html><html><body>"
        f"<h2>ragledger: {e(facts.severity.upper())} anomaly</h2>"
        f"<p>{e(facts.summary)}</p>"
        "<table>"
        f"<tr><th align=left>Rule</th><td>{e(facts.rule)}</td></tr>"
        f"<tr><th align=left>Severity</th><td>{e(facts.severity)}</td></tr>"
        f"<tr><th align=left>Subject</th><td>{e(facts.subject)}</td></tr>"
        f"<tr><th align=left>Detected at</th><td>{e(detected)} (ledger position "
        f"{facts.detected_position})</td></tr>"
        f"<tr><th align=left>Anomaly id</th><td>{e(str(facts.anomaly_id))}</td></tr>"
        "</table>"
        f"<p>Evidence (ledger positions): {e(positions_text)}</p>"
        f"<ul>{evidence_items}</ul>"
        f"{extra}"
        f'<p><a href="{e(list_url)}">Review in the anomalies list</a>; acknowledge with '
        f"<code>POST {e(ack_url)}</code>.</p>"
        "</body></html>"
    )
    headers = {ANOMALY_ID_HEADER: str(facts.anomaly_id)}
    if possible_duplicate:
        headers[POSSIBLE_DUPLICATE_HEADER] = "yes"
    return AnomalyMail(subject=subject, text=text, html=body_html, headers=headers)
