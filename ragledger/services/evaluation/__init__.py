"""The built-in evaluation: a question set over a corpus, run through search and answers.

`dataset` reads the JSON Lines file, `metrics` holds the pure ranking measures,
`rankers` the baselines (exact dense search, full text alone) beside the platform's
hybrid retrieval, and `run` drives a whole evaluation and records it in the ledger.
"""
