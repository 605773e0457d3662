"""Application settings, read from the environment (and a `.env` file) once per process."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragledger.core.secret_files import read_or_create_secret


class Settings(BaseSettings):
    """Every tunable of the platform; env var names are the field names in upper case."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(
        default=Path(".ragledger"),
        validation_alias=AliasChoices("RAGLEDGER_DATA_DIR", "data_dir"),
        description="Where the embedded PostgreSQL, the secret key and caches live.",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL with pgvector. Unset: start the embedded server in data_dir.",
    )
    database_app_role: str | None = Field(
        default="ragledger_app",
        description=(
            "Role the application switches to on every connection (SET ROLE). It may only "
            "INSERT and SELECT on the ledger. Empty: use the connecting user as it is "
            "(when DATABASE_URL already logs in as the restricted role)."
        ),
    )
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    database_pool_pre_ping: bool = Field(
        default=False,
        description=(
            "Test each pooled connection before use. It costs three round trips per "
            "checkout (BEGIN, a ping, ROLLBACK); without it, the first use of a connection "
            "that the server dropped fails once and the whole pool is replaced."
        ),
    )
    auto_migrate: bool | None = Field(
        default=None,
        description=(
            "Apply migrations at start-up. Unset: yes for the embedded server, no for "
            "DATABASE_URL (production runs `ragledger db upgrade` as a deploy step)."
        ),
    )
    redis_url: str | None = Field(default=None, description="Unset: in-process backends.")
    redis_key_prefix: str = Field(
        default="ragledger:",
        description="Namespace of every Redis key, so that several deployments can share one.",
    )
    signing_retired_public_keys: list[str] = Field(
        default_factory=list,
        description=(
            "JSON list of the public keys (PEM or base64 raw) of earlier signing keys, so "
            "that digests they signed still check as valid after a rotation. Never list a "
            "key that leaked."
        ),
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key (PEM) for signed digests. Unset (and no "
        "SIGNING_KEY_FILE): generated once into data_dir/signing_key.pem.",
    )
    signing_key_file: Path | None = Field(
        default=None,
        description=(
            "File holding the Ed25519 private key (PEM), e.g. a mounted secret kept away "
            "from the data dir and the database. It must exist; it is never generated."
        ),
    )
    # Copies of every signed digest kept where the database's owner cannot rewrite them:
    # a digest proves a rewrite only while a copy survives outside the database.
    digest_publish_dir: Path | None = Field(
        default=None,
        description="Directory each signed digest is written to as a JSON file.",
    )
    digest_publish_url: str | None = Field(
        default=None,
        description="HTTP(S) endpoint each signed digest is POSTed to as JSON.",
    )
    digest_publish_timeout_s: float = Field(default=10.0, gt=0)
    # One signed digest a day gives auditors a fixed point to compare against; the
    # scheduler checks hourly and signs when the last digest is older than this.
    digest_interval_s: int = Field(default=86_400, ge=60)
    # Signed tree heads (docs/ledger-format.md): a head each TREE_HEAD_EVERY_EVENTS leaves,
    # or after TREE_HEAD_INTERVAL_S when anything else arrived. 1000 events keep the
    # heads under 0.1% of the ledger; 300 s bounds how long a fresh answer waits for a
    # scheduled head (its receipt signs one at once when none covers it). Checked every
    # TREE_HEAD_CHECK_S by one process (an advisory lock), one cheap query when idle.
    tree_head_every_events: int = Field(default=1000, ge=1)
    tree_head_interval_s: int = Field(default=300, ge=1)
    tree_head_check_s: float = Field(default=5.0, gt=0)
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs tokens. Unset: generated once and kept in data_dir/secret_key.",
    )

    run_subscribers: bool = Field(
        default=True,
        description="Run the subscriber runner inside the API process (off with --no-runner).",
    )
    # Identity and access.
    allow_registration: bool = Field(
        default=False, description="Self-registration; off: admins create accounts."
    )
    access_token_lifetime_s: int = Field(
        default=3600,
        ge=60,
        description="JWT lifetime. Short, since a stolen token works until logout or expiry.",
    )
    password_min_length: int = Field(default=12, ge=8)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Peers (IPs or CIDRs) whose X-Forwarded-For is believed. Empty: the TCP peer "
            "is the client, whatever the header says."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS, with credentials. Never '*'.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token that lets a scraper read /metrics from any address. Unset: only "
            "METRICS_ALLOWED_NETWORKS may read it."
        ),
    )
    metrics_allowed_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description=(
            "Client networks (IPs or CIDRs) that may read /metrics without the token. The "
            "client address is the one TRUSTED_PROXIES resolves. Empty: token only."
        ),
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Larger uploads get 413."
    )
    max_json_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger JSON request bodies get 413."
    )
    # Rate limits, "N/period" with period second, minute, hour or day. Login limits are
    # tight enough to stop online guessing (10 tries per account per 15 minutes is what
    # OWASP's authentication cheat sheet suggests as an order of magnitude) and loose
    # enough for a person who mistypes.
    rate_limit_login_per_account: str = "10/15minute"
    rate_limit_login_per_address: str = "30/15minute"
    rate_limit_upload_per_user: str = "60/hour"
    rate_limit_questions_per_user: str = "30/minute"
    # A search embeds the query and appends an event, like a question without the LLM:
    # twice the question rate, since searching is cheaper and people refine queries.
    rate_limit_search_per_user: str = "60/minute"
    # forgot-password is public and sends mail: per address (shared behind NAT, so
    # looser) and per email address asked about (whether or not it has an account).
    rate_limit_reset_request_per_address: str = "20/hour"
    rate_limit_reset_request_per_account: str = "5/hour"
    password_reset_mail_interval_s: int = Field(
        default=900,
        ge=1,
        description=(
            "At most one reset mail per account in this many seconds, however often it is "
            "asked for (no mail bombing). A reset token lives for an hour, so one mail in "
            "15 minutes leaves the owner a working token."
        ),
    )
    security_event_window_s: int = Field(
        default=60,
        ge=1,
        description=(
            "Repeated denials and rate-limit refusals from one source are recorded once "
            "per window, the first at once, then one event with the count of the ones held "
            "back. Longer: a smaller ledger under attack, coarser timing in the record."
        ),
    )

    # Ingestion and embeddings.
    embedding_model: str = Field(
        default="local/all-MiniLM-L6-v2",
        description=(
            "local/all-MiniLM-L6-v2 runs the bundled model in-process; any other value is a "
            "litellm embedding model string (its provider's env vars apply)."
        ),
    )
    embedding_api_base: str | None = Field(
        default=None, description="api_base passed to litellm (OpenAI-compatible servers)."
    )
    embedding_dimensions: int = Field(
        default=384, description="Vector size of the chunks table; changing it needs a migration."
    )
    # Texts per forward pass. On 2 CPU cores smaller batches were faster per text (8:
    # 13.6 texts/s, 32: 10.5, 64: 8.8 in bench/ingest.py): less padding to the longest
    # text of the batch; a GPU wants larger batches.
    embedding_batch_size: int = Field(default=8, ge=1, le=1024)
    # How the bundled model runs: torch, or ONNX Runtime on a graph exported once from the
    # same weights (cached in DATA_DIR/onnx; same vectors, cosine >= 0.999), or that graph
    # with int8 weights. bench/embedding_backends.py measured the choice.
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = "onnx"
    torch_threads: int = Field(default=0, ge=0, description="0: torch's default.")
    # all-MiniLM-L6-v2 was trained on sequences of up to 256 word pieces; 200 leaves room
    # for the special tokens and keeps a chunk a few paragraphs long.
    chunk_max_tokens: int = Field(default=200, ge=16, le=512)
    chunk_overlap_tokens: int = Field(default=30, ge=0, le=256)
    max_extracted_chars: int = Field(
        default=20_000_000, description="Documents whose text is longer fail ingestion."
    )
    # DOCX is a zip: bound what we inflate so that a zip bomb fails cleanly.
    max_decompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)

    # Asking.
    llm_model: str | None = Field(
        default=None,
        description=(
            "Any litellm model string for generative answers (the in-process SmolLM2 is "
            "`ragledger-local/smollm2-135m-instruct`). Unset: no generative model, answers "
            "are extractive."
        ),
    )
    answer_mode: Literal["extractive", "generative"] | None = Field(
        default=None,
        description=(
            "Mode of a question that names none. Unset: generative when LLM_MODEL is set, "
            "else extractive."
        ),
    )
    # Extractive answers (services/extractive.py). A sentence's relevance is
    # 0.8 x cosine(question, sentence) + 0.2 x the share of the question's content words
    # it contains. On all-MiniLM-L6-v2 a sentence that answers a question scores
    # 0.45-0.75 and unrelated text 0.0-0.3 (measured on the license texts and the leave
    # policy of the tests), so below 0.35 the documents are said not to cover it.
    extractive_min_relevance: float = Field(default=0.35, ge=-1.0, le=1.0)
    # At most this many quoted sentences (plus the neighbours some need), and only those
    # within this margin of the best one: three sentences read as an answer, not a page.
    extractive_max_sentences: int = Field(default=3, ge=1, le=10)
    extractive_relevance_margin: float = Field(default=0.08, ge=0.0, le=1.0)
    # Generative answers are checked sentence by sentence (services/answer_support.py):
    # support = 0.6 x the best cosine against the block's sentences + 0.4 x the share of
    # the answer sentence's content words found in the block. A sentence restating its
    # block scores 0.6-1.0, an invented one 0.2-0.45 on the same measurements.
    support_min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    llm_api_base: str | None = None
    llm_warm_up: bool = Field(
        default=True,
        description="Load the local LLM at start-up (in the background) instead of at the "
        "first question.",
    )
    llm_api_key: SecretStr | None = Field(
        default=None, description="Passed to litellm; unset: the provider's own env var."
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Whole LLM call.")
    llm_stall_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest silence allowed before or between tokens."
    )
    llm_num_retries: int = Field(default=1, ge=0, le=5)
    llm_max_tokens: int = Field(default=512, ge=1, le=8192)
    llm_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    question_max_chars: int = Field(default=2000, ge=10, le=100_000)
    top_k_default: int = Field(default=5, ge=1, le=50)
    top_k_max: int = Field(default=20, ge=1, le=100)
    # Candidates each retriever returns before fusion: 4x top_k_max keeps RRF meaningful.
    retrieval_candidates: int = Field(default=80, ge=1, le=1000)
    rrf_k: int = Field(default=60, ge=1, description="Cormack et al. 2009 use 60.")
    # How the vector and word rankings merge: "score" (cosine + FUSION_TEXT_WEIGHT x the
    # word score relative to the question's best) or "rrf" (equal votes by rank). On the
    # evaluation set score fusion at 0.1 beat RRF and dense search alone on every
    # question type (bench/results/quality.json (bench/quality.py)); 0.2 lost keyword questions.
    fusion: Literal["score", "rrf"] = "score"
    fusion_text_weight: float = Field(default=0.1, ge=0.0, le=10.0)
    # Small-to-big re-ranking (services/window_rerank.py): the first RERANK_DEPTH relevant
    # candidates are re-scored by their best 3-sentence window, embedded with the same
    # model (cached per process). On the evaluation set: recall@5 0.86 against 0.77
    # without (bench/results/quality.json). 0 turns it off (it costs one embedding pass
    # over the windows of uncached chunks per question).
    rerank_depth: int = Field(default=15, ge=0, le=100)
    rerank_window_weight: float = Field(default=0.5, ge=0.0, le=10.0)
    rerank_overlap_weight: float = Field(default=0.2, ge=0.0, le=10.0)
    # A chunk is relevant when its cosine similarity reaches this or it matches the words
    # of the question. 0.25 separates related from unrelated text for all-MiniLM-L6-v2.
    min_similarity: float = Field(default=0.25, ge=-1.0, le=1.0)
    # HNSW search breadth; pgvector's default is 40. 100 keeps recall@10 >= 0.95 at 100k
    # rows (bench/retrieval.py).
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    # Iterative index scans (pgvector 0.8) keep scanning until a restrictive access
    # filter still yields enough rows, up to this many tuples.
    hnsw_max_scan_tuples: int = Field(default=20_000, ge=1000)
    query_embedding_cache_ttl_s: int = Field(default=3600, ge=0)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    worker_healthcheck_timeout_s: int = Field(
        default=60,
        ge=5,
        description=(
            "With serve --workers N: how long a worker may fail to answer uvicorn's "
            "supervisor before it is killed and replaced. uvicorn's 5 s default kills "
            "workers still importing torch and litellm on a busy machine, in a loop."
        ),
    )
    shutdown_stream_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "On SIGTERM, how long an answer in flight may go on streaming before it is "
            "ended with an error event (server_shutdown) and AnswerFailed. Keep it under "
            "the 30 s uvicorn waits for requests in flight."
        ),
    )

    # Mail, named as fastapi-mail's ConnectionConfig fields (MAIL_SERVER, MAIL_PORT, ...).
    # No MAIL_SERVER: mail is written to the log and recorded, never dropped.
    mail_server: str | None = None
    mail_port: int = Field(default=587, ge=1, le=65535)
    mail_username: str | None = None
    mail_password: SecretStr | None = None
    mail_starttls: bool = True
    mail_ssl_tls: bool = False
    # fastapi-mail validates the sender as an email address, whose domain needs a dot.
    mail_from: str = "ragledger@localhost.localdomain"
    mail_from_name: str | None = "ragledger"
    # One SMTP conversation; a server that hangs must not stall the notifier for aiosmtplib's
    # default minute, since the runner retries with backoff anyway.
    mail_timeout_s: int = Field(default=20, ge=1, le=600)
    mail_validate_certs: bool = True
    public_base_url: str = "http://127.0.0.1:8000"

    # Anomaly detection (services/anomaly_rules.py). The thresholds are conservative on
    # purpose: an alert that fires on ordinary use teaches admins to ignore it.
    # Rule question_rate: more questions in the window than max(floor, factor x the
    # user's median per-window count over the windows they were active in during the
    # baseline days). A person reading streamed answers asks at most a question or two a
    # minute, so 20 in 10 minutes is beyond reading speed; 5x their own usual active pace
    # is "far above" for heavy users; 14 days covers two working weeks.
    anomaly_question_window_s: int = Field(default=600, ge=60)
    anomaly_question_floor: int = Field(default=20, ge=1)
    anomaly_question_factor: float = Field(default=5.0, ge=1.0)
    anomaly_baseline_days: int = Field(default=14, ge=1, le=90)
    # Rule repeated_auth_failures: at least this many LoginFailed/AccessDenied within the
    # window. 15 minutes matches the login rate limit's period; 5 per account is half the
    # login limit (someone guessing, not someone mistyping twice); an address is shared
    # (NAT, proxies), so it gets twice that.
    anomaly_auth_window_s: int = Field(default=900, ge=60)
    anomaly_auth_failures_per_account: int = Field(default=5, ge=2)
    anomaly_auth_failures_per_address: int = Field(default=10, ge=2)
    # Rule large_audit_read: an export larger than max(floor, factor x the median of the
    # actor's previous exports), or more audit-view items within the window than
    # max(floor, factor x their median per active window). 100k events is far beyond a
    # spot check yet cheap to export; 2,000 items is 20 full pages of the audit views in
    # 10 minutes, more than a person reads; 10x their usual is "far larger".
    anomaly_export_floor: int = Field(default=100_000, ge=1)
    anomaly_audit_read_floor: int = Field(default=2_000, ge=1)
    anomaly_audit_read_factor: float = Field(default=10.0, ge=1.0)
    anomaly_audit_window_s: int = Field(default=600, ge=60)
    anomaly_export_history: int = Field(default=20, ge=1, le=1000)
    # The same rule and subject is raised again only after this long, so that a burst
    # gives one anomaly per quarter hour rather than one per event.
    anomaly_redetect_after_s: int = Field(default=900, ge=0)
    # Rule unsupported_answers: this many generative answers in a row (per model) whose
    # groundedness is below the threshold. One weak answer happens; three in a row means
    # the model or the prompt stopped following the context.
    anomaly_unsupported_run: int = Field(default=3, ge=1, le=1000)
    anomaly_unsupported_below: float = Field(default=0.5, ge=0.0, le=1.0)
    # At most one mail per rule and subject in this window; anomalies within it are
    # grouped into the next mail's count. An hour keeps an ongoing attack to a handful of
    # mails a day while the anomalies list still shows every quarter hour of it.
    notifier_group_window_s: int = Field(default=3600, ge=0)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON otherwise."
    )
    log_level: str = "INFO"

    # Subscriber runner. 500 events per batch keeps a batch's transaction well under a
    # second for the projections we have while amortising the checkpoint write.
    runner_batch_size: int = Field(default=500, ge=1, le=10_000)
    # NOTIFY wakes subscribers at once; polling only covers a lost notification.
    runner_poll_interval_s: float = Field(default=1.0, gt=0)
    runner_backoff_initial_s: float = Field(default=0.5, gt=0)
    runner_backoff_max_s: float = Field(default=30.0, gt=0)
    # A runner that does not hold a subscriber's lock retries this often, so a standby
    # takes over within this many seconds after the active one dies.
    runner_standby_retry_s: float = Field(default=2.0, gt=0)

    # Crashes and stuck work (docs/security.md: "Crashes and stuck work").
    # A question with no outcome after LLM_TIMEOUT_S plus this margin was cut off by a
    # crash: the margin covers retrieval, the appends and the shutdown grace.
    interrupted_answer_margin_s: float = Field(default=60.0, ge=0)
    interrupted_answer_sweep_interval_s: float = Field(default=60.0, gt=0)
    # 8 attempts with the runner's doubling backoff (0.5 s ... 30 s) span about 90 s:
    # long enough for a remote embedding model's blip, short enough that one poisoned
    # upload does not hold every later one for long.
    ingestion_max_attempts: int = Field(default=8, ge=1)
    # Extraction runs in a child process with these limits. A 50 MiB PDF parses in well
    # under a minute here; 2 GiB of address space is far above what pypdf and lxml need
    # for such a file (the interpreter and its imports take ~100 MiB of it).
    extraction_timeout_s: float = Field(default=120.0, gt=0)
    extraction_memory_bytes: int = Field(default=2 * 1024**3, ge=128 * 1024**2)
    # Documents one extraction child serves before it is replaced (it is also replaced
    # after any failure); 1 is a fresh child per document. Starting one costs ~0.8 s of
    # CPU, about 1 s of the ~4 s a corpus page took to ingest with ONNX; over 100
    # documents that is 1%, and a child's address space, grown by fragmentation under
    # the same RLIMIT_AS, is still renewed often.
    extraction_worker_documents: int = Field(default=100, ge=1)
    # A subscriber failing this many times in a row at one event, or this many events
    # behind the head with no progress for SUBSCRIBER_STALL_ALERT_S, raises an anomaly
    # (rule subscriber_stuck) that the notifier mails to admins, once per incident.
    subscriber_failure_alert_count: int = Field(default=5, ge=1)
    subscriber_lag_alert_events: int = Field(default=10_000, ge=1)
    subscriber_stall_alert_s: float = Field(default=300.0, gt=0)
    subscriber_health_interval_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check_secret_key(self) -> Settings:
        # `SECRET_KEY=` (empty) would sign every token with an empty key; a short one is
        # guessable offline from any token. 32 characters is the floor (HS256 wants at
        # least 256 bits of key; the generated one has 384).
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError(
                "SECRET_KEY must be at least 32 characters (or unset, to generate one "
                "into the data dir)"
            )
        return self

    @model_validator(mode="after")
    def _check_signing_key(self) -> Settings:
        if self.signing_key is not None and not self.signing_key.get_secret_value().strip():
            raise ValueError(
                "SIGNING_KEY is empty: set it to an Ed25519 private key (PEM), or unset it"
            )
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set SIGNING_KEY or SIGNING_KEY_FILE, not both")
        if self.digest_publish_url is not None and not self.digest_publish_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("DIGEST_PUBLISH_URL must be an http:// or https:// URL")
        return self

    @model_validator(mode="after")
    def _check_chunk_sizes(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_max_tokens:
            raise ValueError("CHUNK_OVERLAP_TOKENS must be smaller than CHUNK_MAX_TOKENS")
        return self

    @property
    def uses_embedded_database(self) -> bool:
        """True when no DATABASE_URL is configured and the embedded server is used."""
        return not self.database_url

    @property
    def should_auto_migrate(self) -> bool:
        """Whether start-up applies pending migrations."""
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.uses_embedded_database

    def resolved_secret_key(self) -> str:
        """The configured secret key, or the one generated once and kept in the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        generated = read_or_create_secret(
            self.data_dir / "secret_key", lambda: secrets.token_urlsafe(48).encode("ascii")
        )
        return generated.decode("utf-8").strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()
