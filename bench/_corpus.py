"""Synthetic policy documents for the benchmarks: Markdown sections of plain English rules.

A rule is "<subject> <must|should|...> <action> <object> <condition>."; a share of the
sentences are stock ones instead. Two vocabularies exist because the ingest and load
benchmarks were calibrated on their own (chunk counts, full-text hits): changing either
list, or the order of the draws, changes that benchmark's documents and so its figures.
The text depends only on the random generator given, so every run writes the same words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

VERBS = ("must", "should", "are required to", "may only")
SUBSECTION_SHARE = 0.4


@dataclass(frozen=True)
class Vocabulary:
    """The words of one corpus, and how its sentences draw them."""

    topics: tuple[str, ...]
    subjects: tuple[str, ...]
    actions: tuple[str, ...]
    objects: tuple[str, ...]
    conditions: tuple[str, ...]
    # Stock sentences; they may name the drawn {obj} and {subj_lower}.
    extras: tuple[str, ...]
    # Section headings; they may name an object, {obj_title}.
    sections: tuple[str, ...]
    extra_share: float
    # Draw the subject and object before choosing between a stock sentence and a rule
    # (the stock sentences name them); otherwise only a rule draws them.
    names_first: bool
    # Past participles of `actions`, index for index (questions in the passive).
    participles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """How a document's sections are laid out."""

    # Draw an object for every heading (for headings that name {obj_title}).
    heading_object: bool
    # How many subsections a section has when it has any (low, high).
    subsections: tuple[int, int]
    # Sentences in a subsection's paragraph (low, high).
    subsection_sentences: tuple[int, int]


def sentence(words: Vocabulary, rng: random.Random) -> str:
    """One sentence: a rule, or a stock sentence (`words.extra_share` of them)."""
    if words.names_first:
        obj = rng.choice(words.objects)
        subject = rng.choice(words.subjects)
        if rng.random() < words.extra_share:
            return rng.choice(words.extras).format(
                obj=obj, subj_lower=subject[0].lower() + subject[1:]
            )
        verb = rng.choice(VERBS)
        return f"{subject} {verb} {rng.choice(words.actions)} {obj} {rng.choice(words.conditions)}."
    if rng.random() < words.extra_share:
        return rng.choice(words.extras)
    verb = rng.choice(VERBS)
    action = rng.choice(words.actions)
    subject = rng.choice(words.subjects)
    obj = rng.choice(words.objects)
    return f"{subject} {verb} {action} {obj} {rng.choice(words.conditions)}."


def paragraph(words: Vocabulary, rng: random.Random, low: int = 3, high: int = 6) -> str:
    """Between `low` and `high` sentences."""
    return " ".join(sentence(words, rng) for _ in range(rng.randint(low, high)))


def sections(words: Vocabulary, layout: Layout, rng: random.Random) -> list[str]:
    """The numbered sections of a document, as Markdown lines.

    Each section has two or three paragraphs; some have subsections titled by an object.
    """
    lines: list[str] = []
    for number, heading in enumerate(words.sections, start=1):
        if layout.heading_object:
            heading = heading.format(obj_title=rng.choice(words.objects).title())
        lines += [f"## {number}. {heading}", ""]
        for _ in range(rng.randint(2, 3)):
            lines += [paragraph(words, rng), ""]
        if rng.random() < SUBSECTION_SHARE:
            low, high = layout.subsections
            for sub in range(1, (rng.randint(low, high) if high > low else low) + 1):
                lines += [f"### {number}.{sub} {rng.choice(words.objects).capitalize()}", ""]
                lines += [paragraph(words, rng, *layout.subsection_sentences), ""]
    return lines


# --- The ingest benchmark's corpus (long subjects and objects, stock sentences naming them)

POLICY_WORDS = Vocabulary(
    topics=(
        "Information Security",
        "Remote Working",
        "Data Retention",
        "Acceptable Use",
        "Travel and Expenses",
        "Incident Response",
        "Procurement",
        "Code of Conduct",
        "Access Control",
        "Business Continuity",
        "Privacy and Data Protection",
        "Vendor Management",
    ),
    subjects=(
        "All employees",
        "Contractors and temporary staff",
        "Line managers",
        "The information security team",
        "Data owners",
        "System administrators",
        "The finance department",
        "Each department head",
        "The compliance officer",
        "Third-party suppliers",
        "Members of the executive committee",
        "The human resources team",
    ),
    actions=(
        "review",
        "approve",
        "document",
        "report",
        "retain",
        "encrypt",
        "classify",
        "securely dispose of",
        "escalate",
        "record",
        "protect",
        "verify",
    ),
    objects=(
        "customer records",
        "access requests",
        "expense claims",
        "security incidents",
        "personal data",
        "laptops and mobile devices",
        "system passwords",
        "vendor contracts",
        "backup media",
        "audit logs",
        "purchase orders",
        "confidential documents",
    ),
    conditions=(
        "within five working days",
        "before the end of each quarter",
        "in accordance with the retention schedule",
        "unless an exception has been approved in writing",
        "using only the tools approved by the company",
        "as soon as reasonably practicable",
        "at least once every twelve months",
        "before access is granted",
        "when they leave the organisation",
        "in line with applicable law and regulation",
        "whenever a significant change is made",
        "after consulting the relevant data owner",
    ),
    extras=(
        "Failure to comply with this section may result in disciplinary action, up to and "
        "including termination of employment.",
        "Where this policy conflicts with local legislation, the stricter requirement applies.",
        "Questions about {obj} should be directed to {subj_lower}.",
        "This requirement applies to {obj} held on paper as well as in electronic form.",
        "Records of each decision must include the date, the person responsible and the outcome.",
        "Exceptions are granted for a limited period and are reviewed before they expire.",
        "The company provides training on {obj} to new starters during their first month.",
        "Managers are expected to lead by example and to raise concerns without delay.",
        "Evidence of compliance may be requested during internal and external audits.",
        "Any suspected breach of this requirement must be reported to {subj_lower} immediately.",
    ),
    sections=(
        "Purpose",
        "Scope",
        "Definitions",
        "Roles and Responsibilities",
        "Policy Statements",
        "Handling of {obj_title}",
        "Monitoring and Review",
        "Exceptions",
        "Training and Awareness",
        "Compliance and Enforcement",
        "Related Documents",
        "Document Control",
    ),
    extra_share=0.3,
    names_first=True,
)
POLICY_LAYOUT = Layout(heading_object=True, subsections=(2, 3), subsection_sentences=(3, 6))


# --- The load benchmark's corpus (short words, so that questions and searches find them) --

LOAD_WORDS = Vocabulary(
    topics=(
        "Information Security",
        "Remote Working",
        "Data Retention",
        "Acceptable Use",
        "Travel and Expenses",
        "Incident Response",
        "Procurement",
        "Code of Conduct",
        "Access Control",
        "Business Continuity",
        "Privacy",
        "Vendor Management",
    ),
    subjects=(
        "All employees",
        "Contractors",
        "Line managers",
        "The information security team",
        "Data owners",
        "System administrators",
        "The finance department",
        "Department heads",
        "The compliance officer",
        "Suppliers",
        "The human resources team",
    ),
    actions=(
        "review",
        "approve",
        "document",
        "report",
        "retain",
        "encrypt",
        "classify",
        "escalate",
        "record",
        "protect",
        "verify",
        "archive",
    ),
    participles=(
        "reviewed",
        "approved",
        "documented",
        "reported",
        "retained",
        "encrypted",
        "classified",
        "escalated",
        "recorded",
        "protected",
        "verified",
        "archived",
    ),
    objects=(
        "customer records",
        "access requests",
        "expense claims",
        "security incidents",
        "personal data",
        "laptops",
        "system passwords",
        "vendor contracts",
        "backup media",
        "audit logs",
        "purchase orders",
        "confidential documents",
    ),
    conditions=(
        "within five working days",
        "before the end of each quarter",
        "in accordance with the retention schedule",
        "unless an exception has been approved in writing",
        "using only approved tools",
        "as soon as reasonably practicable",
        "at least once every twelve months",
        "before access is granted",
        "when they leave the organisation",
        "whenever a significant change is made",
    ),
    extras=(
        "Failure to comply may result in disciplinary action.",
        "Where this policy conflicts with local law, the stricter requirement applies.",
        "Evidence of compliance may be requested during internal and external audits.",
        "Exceptions are granted for a limited period and reviewed before they expire.",
        "Records of each decision include the date, the person responsible and the outcome.",
    ),
    sections=(
        "Purpose",
        "Scope",
        "Definitions",
        "Roles and Responsibilities",
        "Policy Statements",
        "Handling Requirements",
        "Monitoring and Review",
        "Exceptions",
        "Training and Awareness",
        "Compliance",
        "Related Documents",
        "Document Control",
    ),
    extra_share=0.2,
    names_first=False,
)
LOAD_LAYOUT = Layout(heading_object=False, subsections=(1, 1), subsection_sentences=(3, 5))
