"""The FastAPI application factory and its lifespan (database, migrations, runner)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi_cache import FastAPICache
from fastapi_cache.backends.inmemory import InMemoryBackend
from fastapi_cache.backends.redis import RedisBackend
from fastapi_pagination import add_pagination
from redis.asyncio import Redis

from ragledger.api.app_services import AppServices, app_services, install_app_services
from ragledger.api.auth import build_fastapi_users
from ragledger.api.background import BackgroundWork
from ragledger.api.body_limit import BodyLimitMiddleware
from ragledger.api.browser_session import csrf_key
from ragledger.api.client_address import TrustedProxies
from ragledger.api.errors import BODY_ERRORS, error_responses, install_error_handlers
from ragledger.api.middleware import RequestContextMiddleware
from ragledger.api.rate_limits import (
    REDIS_TIMEOUT_S,
    RateLimitExceededError,
    RateLimits,
    RateScope,
    rate_limit_exceeded_handler,
)
from ragledger.api.request_context import event_metadata
from ragledger.api.routes import (
    admin_anomalies,
    admin_users,
    audit_ledger,
    audit_tree,
    audit_views,
    auth,
    documents,
    health,
    metrics,
    password_reset,
    questions,
    users,
)
from ragledger.api.security_headers import SecurityHeadersMiddleware, add_cors, docs_paths_of
from ragledger.api.shutdown import ShutdownSignal
from ragledger.core.embedded_postgres import release_embedded_postgres
from ragledger.core.logging import configure_logging
from ragledger.core.metrics import monitor_event_loop_lag
from ragledger.core.runtime import open_database
from ragledger.core.settings import Settings, get_settings
from ragledger.events.access import RateLimitExceeded
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import SubscriberRunner, runner_config
from ragledger.projections.subscriber_alerts import watch_subscribers
from ragledger.schemas.users import FastAPIUsersCreate, FastAPIUsersRead
from ragledger.services.audit.cursor import cursor_key
from ragledger.services.embedding import close_embedders
from ragledger.services.interrupted_answers import sweep_interrupted_answers
from ragledger.services.ledger_audit import scheduled_digests
from ragledger.services.local_llm import close_local_llm, get_local_llm, register_local_llm
from ragledger.services.mail import Mailer
from ragledger.services.security_events import (
    MAX_EMAIL_CHARS,
    MAX_METHOD_CHARS,
    MAX_PATH_CHARS,
    SecurityEventRecorder,
    cap,
    source_address,
)
from ragledger.services.signing import DigestSigner
from ragledger.services.tokens import TokenService
from ragledger.services.tree_heads import scheduled_tree_heads
from ragledger.web import install_console

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, run_subscribers: bool | None = None) -> FastAPI:
    """Build the app; with `run_subscribers` the lifespan also runs the subscriber runner."""
    settings = settings or get_settings()
    if run_subscribers is None:
        run_subscribers = settings.run_subscribers

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = await open_database(settings)
        events_redis = (
            Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
            )
            if settings.redis_url
            else None
        )
        security_events = SecurityEventRecorder(
            database.sessionmaker,
            window_s=settings.security_event_window_s,
            redis=events_redis,
            key_prefix=f"{settings.redis_key_prefix}sec:",
        )
        events_flusher = asyncio.create_task(
            # A few times per window, so a window's count is recorded soon after it ends.
            flush_security_events(security_events, max(1.0, settings.security_event_window_s / 4)),
            name="security-event-flush",
        )
        limits = RateLimits.from_settings(settings, key_prefix=f"{settings.redis_key_prefix}rl")
        await limits.prepare()
        limits.on_exceeded = record_rate_limit_exceeded
        services = AppServices(
            settings=settings,
            trusted_proxies=proxies,
            metrics_networks=metrics_networks,
            csrf_key=csrf,
            cursor_key=cursor,
            database=database,
            mailer=Mailer(settings),
            background=BackgroundWork(),
            security_events=security_events,
            signer=DigestSigner.from_settings(settings),
            tokens=TokenService(
                secret=settings.resolved_secret_key(),
                lifetime_s=settings.access_token_lifetime_s,
            ),
            rate_limits=limits,
            shutdown=ShutdownSignal(),
        )
        install_app_services(app, services)
        # For routes declared with rate_limited(), which reads it without AppServices.
        app.state.rate_limits = limits
        cache_redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        FastAPICache.init(
            RedisBackend(cache_redis) if cache_redis is not None else InMemoryBackend(),
            prefix=f"{settings.redis_key_prefix}cache:",
        )
        runner: SubscriberRunner | None = None
        runner_task: asyncio.Task[None] | None = None
        if run_subscribers:
            runner = SubscriberRunner(
                database.engine, all_subscribers(settings), runner_config(settings)
            )
            runner_task = asyncio.create_task(runner.run(), name="subscriber-runner")
            background = [
                asyncio.create_task(
                    scheduled_digests(database.sessionmaker, services.signer, settings),
                    name="scheduled-digests",
                ),
                asyncio.create_task(
                    sweep_interrupted_answers(database.sessionmaker, settings),
                    name="interrupted-answers",
                ),
                asyncio.create_task(
                    watch_subscribers(database.sessionmaker, settings),
                    name="subscriber-alerts",
                ),
                asyncio.create_task(
                    scheduled_tree_heads(database.sessionmaker, services.signer, settings),
                    name="scheduled-tree-heads",
                ),
            ]
        services.shutdown.install()
        loop_lag = asyncio.create_task(monitor_event_loop_lag(), name="event-loop-lag")
        warm_llm: asyncio.Task[None] | None = None
        if (settings.llm_model or "").startswith("ragledger-local/") and settings.llm_warm_up:
            # The first load dequantizes the GGUF (about half a minute on 2 cores, then
            # cached in the data dir); do it now rather than in the first question.
            register_local_llm(settings)
            warm_llm = asyncio.create_task(get_local_llm(settings).warm_up(), name="llm-warm-up")
        log.info("app_started", runner=run_subscribers)
        try:
            yield
        finally:
            services.shutdown.uninstall()
            loop_lag.cancel()
            # Mails asked for just before shutdown still leave (or fail in the log).
            await services.background.aclose(timeout_s=settings.mail_timeout_s)
            events_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events_flusher
            # This process's windows end with it: record what they held back.
            await security_events.flush_due(everything=True)
            if events_redis is not None:
                await events_redis.aclose()
            if runner is not None and runner_task is not None:
                runner.stop()
                await runner_task
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            # A warm-up still loading is abandoned, not waited for: the first start's
            # load takes tens of seconds and SIGTERM must not (issue 14, item 17). Its
            # daemon thread ends with the process; the model cache it may be writing is
            # published by rename only when complete.
            warming = warm_llm is not None and not warm_llm.done()
            if warm_llm is not None:
                warm_llm.cancel()
                with contextlib.suppress(BaseException):
                    await warm_llm
                if warming:
                    log.info("warm_up_abandoned", model=settings.llm_model)
                await close_local_llm(wait=False)
            if cache_redis is not None:
                await cache_redis.aclose()
            await close_embedders(wait=False)
            await limits.aclose()
            await database.dispose()
            if settings.uses_embedded_database:
                await asyncio.to_thread(release_embedded_postgres)
            log.info("app_stopped")

    app = FastAPI(
        title="ragledger",
        version="0.1.0",
        summary="Event-sourced, audit-first retrieval-augmented answers.",
        lifespan=lifespan,
    )
    proxies = TrustedProxies.parse(settings.trusted_proxies)
    metrics_networks = TrustedProxies.parse(settings.metrics_allowed_networks)
    # Derived once: resolving the key may read the data dir's key file.
    secret = settings.resolved_secret_key()
    csrf = csrf_key(secret)
    cursor = cursor_key(secret)
    install_error_handlers(app)
    app.add_exception_handler(RateLimitExceededError, rate_limit_exceeded_handler)

    api = APIRouter(prefix="/api/v1")
    api.include_router(health.router)
    api.include_router(auth.router)
    fastapi_users = build_fastapi_users(
        settings.resolved_secret_key(), settings.access_token_lifetime_s
    )
    # Malformed JSON is 400 (api/errors.py); the library declares 400 only where it has
    # one of its own, so the body errors are added to both routers.
    # The library's reset route, but our forgot-password (rate-limited, answered before
    # any work, at most one mail per account per interval: routes/password_reset.py).
    reset_router = fastapi_users.get_reset_password_router()
    reset_router.routes = [
        route for route in reset_router.routes if getattr(route, "path", None) != "/forgot-password"
    ]
    api.include_router(password_reset.router)
    api.include_router(
        reset_router,
        prefix="/auth",
        tags=["auth"],
        responses=error_responses(*BODY_ERRORS),
    )
    api.include_router(
        fastapi_users.get_verify_router(FastAPIUsersRead),
        prefix="/auth",
        tags=["auth"],
        responses=error_responses(*BODY_ERRORS),
    )
    if settings.allow_registration:
        api.include_router(
            fastapi_users.get_register_router(FastAPIUsersRead, FastAPIUsersCreate),
            prefix="/auth",
            tags=["auth"],
        )
    api.include_router(users.router)
    api.include_router(admin_users.router)
    api.include_router(admin_anomalies.router)
    api.include_router(documents.router)
    api.include_router(questions.router)
    api.include_router(audit_ledger.router)
    api.include_router(audit_tree.router)
    api.include_router(audit_views.router)
    app.include_router(api)
    app.include_router(metrics.router)
    app.state.unlisted_paths = ("/metrics",)
    install_console(app)
    add_pagination(app)

    # Outermost last: CORS wraps everything so that 413 and 429 still carry its headers.
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=settings.max_json_body_bytes,
        path_limits={"/api/v1/documents": settings.max_upload_bytes},
    )
    app.add_middleware(
        SecurityHeadersMiddleware, docs_paths=docs_paths_of(app), trusted_proxies=proxies
    )
    app.add_middleware(RequestContextMiddleware)
    add_cors(app, settings.cors_origins)
    return app


async def record_rate_limit_exceeded(
    request: Request, scope: str, identity: str, retry_after_s: int
) -> None:
    """Record a refusal in the ledger, one event per source and window with a count."""
    user = getattr(request.state, "user", None)
    metadata = event_metadata(request)
    user_key = user.id if user is not None else "-"
    await app_services(request.app).security_events.record(
        RateLimitExceeded(
            scope=scope,
            method=cap(request.method, MAX_METHOD_CHARS) or "",
            path=cap(request.url.path, MAX_PATH_CHARS) or "",
            retry_after_s=retry_after_s,
            user_id=user.id if user is not None else None,
            email=cap(identity, MAX_EMAIL_CHARS) if scope == RateScope.LOGIN_ACCOUNT else None,
        ),
        metadata,
        source=f"{source_address(metadata.client_ip)}|{user_key}|{scope}",
    )


async def flush_security_events(recorder: SecurityEventRecorder, interval_s: float) -> None:
    """Record the counts held back by ended windows, every `interval_s`, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await recorder.flush_due()
        except Exception:
            log.exception("security_event_flush_failed")


def create_default_app() -> FastAPI:
    """Factory for `uvicorn --factory` (reads settings from the environment)."""
    settings = get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return create_app(settings)
