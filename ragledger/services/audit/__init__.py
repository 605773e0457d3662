"""The audit views' reads: the ledger and the answers paged, a question's or a document's
story, and the AuditViewed record of each read.

- `cursor`: the signed keyset cursor of the ledger view;
- `filters`: the ledger's and the answers' filters, validated, as SQL conditions;
- `positions`: time ranges turned into position ranges, and a projection's position;
- `event_pages`: the ledger paged by position (a document's events included);
- `answer_pages`: the answers paged by number, with their total;
- `stories`: everything the ledger says about one question or one document;
- `recorded_views`: AuditViewed, appended after each read.
"""
