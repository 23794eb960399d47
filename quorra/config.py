"""Typed settings from the environment (12-factor), validated once at start.

``Settings.from_env(os.environ)`` is the only reader of the environment. Every bad
variable is reported in one ``InvalidConfig``, so an operator fixes them all at once.
Tests build ``Settings(...)`` directly with field names.
"""

from __future__ import annotations

import hmac
import os
import socket
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from quorra.access import Authenticator
from quorra.durations import parse_duration
from quorra.errors import InvalidConfig
from quorra.jobs import DEFAULT_IDEMPOTENCY_TTL_SECONDS, MAX_QUEUE_CHARS, MAX_TIMEOUT_SECONDS, is_valid_name

DEV_API_KEY = "dev-api-key-change-in-production"
MIN_SECRET_CHARS = 16
# RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits)
MIN_JWT_SECRET_CHARS = 32


def split_list(value: object) -> object:
    """'a, b,,c' -> ('a', 'b', 'c'); the comma lists of GoQuorra's variables."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def parse_address(address: str) -> tuple[str, int]:
    """':8080' -> ('0.0.0.0', 8080); 'localhost:50051' -> ('localhost', 50051)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port or :port, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def listen_address(address: str) -> str:
    """The address a server binds: ':50051' -> '0.0.0.0:50051'; an IPv6 host stays bracketed."""
    host, port = parse_address(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dial_target(address: str) -> str:
    """The address a client dials: ':50051' (listen form) becomes 'localhost:50051'."""
    host, port = parse_address(address)
    return f"{'localhost' if host in ('0.0.0.0', '::') else host}:{port}"


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
SecondsOrZero = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Names = Annotated[tuple[str, ...], BeforeValidator(split_list)]


def _whole_seconds(value: object) -> object:
    value = parse_duration(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A duration in whole seconds (a job's timeout): '90s', '5m', 300.
WholeSeconds = Annotated[int, BeforeValidator(_whole_seconds), Field(ge=1, le=MAX_TIMEOUT_SECONDS)]


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseModel):
    """Every setting, with its environment variable as the alias."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    database_url: str = Field("sqlite:///quorra.db", alias="DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    http_addr: str = Field(":8080", alias="QUORRA_HTTP_ADDR")
    grpc_addr: str = Field(":50051", alias="QUORRA_GRPC_ADDR")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="QUORRA_LOG_LEVEL")
    log_format: Literal["json", "text"] = Field("json", alias="QUORRA_LOG_FORMAT")
    api_keys: Names = Field((DEV_API_KEY,), alias="QUORRA_API_KEY", min_length=1)
    # Keys that may only read (the viewer role): REST GETs and the dashboard without its buttons.
    readonly_api_keys: Names = Field((), alias="QUORRA_READONLY_API_KEYS", repr=False)
    max_payload_bytes: int = Field(1024 * 1024, alias="QUORRA_MAX_PAYLOAD_BYTES", ge=1024)
    # Signs list cursors (comma list: the first signs, all verify). Unset: derived from the API keys.
    secret_keys: Names = Field((), alias="QUORRA_SECRET_KEY", repr=False)
    # The most payload and result bytes one page of GET /v1/jobs?include=... may carry.
    list_max_bytes: int = Field(4 * 1024 * 1024, alias="QUORRA_LIST_MAX_BYTES", ge=64 * 1024)
    # dashboard: payloads and results are shown to signed-in users; false: shown on no page
    dashboard_show_payloads: bool = Field(True, alias="QUORRA_DASHBOARD_SHOW_PAYLOADS")
    # dashboard: how often its pages fetch their live part again (while the tab is visible)
    dashboard_refresh_seconds: Seconds = Field(5.0, alias="QUORRA_DASHBOARD_REFRESH")
    # dashboard: how long a sign-in lasts before the key is asked for again
    dashboard_session_seconds: Seconds = Field(12 * 3600.0, alias="QUORRA_DASHBOARD_SESSION_TTL")
    # metrics: label values clients choose are capped; the rest are counted as `other`
    metrics_max_queues: int = Field(100, alias="QUORRA_METRICS_MAX_QUEUES", ge=1, le=100_000)
    metrics_max_job_types: int = Field(100, alias="QUORRA_METRICS_MAX_JOB_TYPES", ge=1, le=100_000)
    # grpc, scheduler, worker: serve this process's own /metrics here (one port per process,
    # for hosts that share no filesystem: containers, pods). Unset: no endpoint of its own.
    metrics_addr: str | None = Field(None, alias="QUORRA_METRICS_ADDR")

    # access: managed keys are looked up at most once per this long per process, which bounds how
    # long a key revoked elsewhere keeps working here (see quorra.keys.KeyResolver)
    key_cache_ttl_seconds: Seconds = Field(5.0, alias="QUORRA_KEY_CACHE_TTL", le=300)
    # JWT bearer tokens (quorra.tokens): HS256 with a shared secret, or RS/ES keys from a JWKS URL
    jwt_secret: str | None = Field(None, alias="QUORRA_JWT_SECRET", repr=False)
    jwt_jwks_url: str | None = Field(None, alias="QUORRA_JWT_JWKS_URL")
    jwt_issuer: str | None = Field(None, alias="QUORRA_JWT_ISSUER")
    jwt_audience: str | None = Field(None, alias="QUORRA_JWT_AUDIENCE")
    jwt_leeway_seconds: SecondsOrZero = Field(30.0, alias="QUORRA_JWT_LEEWAY", le=600)
    jwt_role_claim: str = Field("role", alias="QUORRA_JWT_ROLE_CLAIM", min_length=1)
    jwt_tenant_claim: str = Field("tenant", alias="QUORRA_JWT_TENANT_CLAIM", min_length=1)
    jwt_jwks_cache_seconds: Seconds = Field(300.0, alias="QUORRA_JWT_JWKS_CACHE")
    # how long audit entries are kept (the scheduler prunes older ones)
    audit_retention_seconds: Seconds = Field(365 * 86400.0, alias="QUORRA_AUDIT_RETENTION")

    # web: gunicorn gthread workers
    web_workers: int = Field(2, alias="QUORRA_WEB_WORKERS", ge=1, le=64)
    web_threads: int = Field(8, alias="QUORRA_WEB_THREADS", ge=1, le=256)
    # web: reading requests and bounding work (per worker; see quorra/api/http_worker.py)
    web_header_timeout_seconds: Seconds = Field(10.0, alias="QUORRA_WEB_HEADER_TIMEOUT")
    web_body_timeout_seconds: Seconds = Field(30.0, alias="QUORRA_WEB_BODY_TIMEOUT")
    web_keepalive_seconds: Seconds = Field(5.0, alias="QUORRA_WEB_KEEPALIVE")
    web_max_connections: int = Field(1000, alias="QUORRA_WEB_MAX_CONNECTIONS", ge=1, le=100_000)
    web_queue: int = Field(64, alias="QUORRA_WEB_QUEUE", ge=0, le=100_000)
    web_buffer_bytes: int = Field(64 * 1024 * 1024, alias="QUORRA_WEB_BUFFER_BYTES", ge=1024 * 1024)

    # grpc: one thread per in-flight call; long polls hold theirs for up to lease_wait_max
    grpc_threads: int = Field(64, alias="QUORRA_GRPC_THREADS", ge=4, le=1024)
    lease_wait_max_seconds: Seconds = Field(30.0, alias="QUORRA_LEASE_WAIT_MAX")
    poll_interval_seconds: Seconds = Field(0.1, alias="QUORRA_POLL_INTERVAL")
    shutdown_grace_seconds: Seconds = Field(10.0, alias="QUORRA_SHUTDOWN_GRACE")
    # True: a lease waits for its commit to reach disk (PostgreSQL synchronous_commit); by
    # default it does not, and a database crash may lose the last moments' leases, whose
    # jobs then run again (README, "Durability of leases").
    durable_leases: bool = Field(False, alias="QUORRA_DURABLE_LEASES")
    # the payload bytes one LeaseJobs batch may carry (the first job always comes): bounds the
    # gRPC server's memory whatever max_jobs a worker asks for
    lease_max_bytes: int = Field(8 * 1024 * 1024, alias="QUORRA_LEASE_MAX_BYTES", ge=1024)
    grpc_health_watches: int = Field(16, alias="QUORRA_GRPC_HEALTH_WATCHES", ge=1, le=100_000)

    # scheduler
    scheduler_interval_seconds: Seconds = Field(1.0, alias="QUORRA_SCHEDULER_INTERVAL")
    retention_seconds: Seconds = Field(7 * 86400.0, alias="QUORRA_RETENTION")
    prune_batch_size: int = Field(500, alias="QUORRA_PRUNE_BATCH", ge=1, le=100_000)
    # how long an Idempotency-Key is remembered (its job is kept at least as long)
    idempotency_ttl_seconds: Seconds = Field(DEFAULT_IDEMPOTENCY_TTL_SECONDS, alias="QUORRA_IDEMPOTENCY_TTL")
    # schedules: a tick still due this long after its time is missed (its schedule's policy applies)
    schedule_misfire_threshold_seconds: Seconds = Field(10.0, alias="QUORRA_SCHEDULE_MISFIRE_THRESHOLD")
    # a TOML file of schedules, created or updated by name when the scheduler starts
    schedules_file: str | None = Field(None, alias="QUORRA_SCHEDULES_FILE")

    # jobs: how long one attempt may run when the job names no timeout_seconds (None: no limit)
    default_job_timeout_seconds: WholeSeconds | None = Field(None, alias="QUORRA_DEFAULT_JOB_TIMEOUT")

    # webhooks: deliveries run in every scheduler process (quorra.delivery), this many at once
    # (0: none in this process); each POST may take this long; and deliveries to private,
    # loopback and link-local addresses are refused when not allowed (set false in production)
    webhook_concurrency: int = Field(8, alias="QUORRA_WEBHOOK_CONCURRENCY", ge=0, le=256)
    webhook_timeout_seconds: Seconds = Field(10.0, alias="QUORRA_WEBHOOK_TIMEOUT", le=300)
    webhook_allow_private: bool = Field(True, alias="QUORRA_WEBHOOK_ALLOW_PRIVATE")
    webhook_poll_interval_seconds: Seconds = Field(1.0, alias="QUORRA_WEBHOOK_POLL_INTERVAL")

    # worker (GoQuorra names)
    worker_id: str = Field(default_factory=_default_worker_id, alias="QUORRA_WORKER_ID", min_length=1)
    worker_queues: Names = Field(("default",), alias="QUORRA_WORKER_QUEUES", min_length=1)
    worker_max_jobs: int = Field(5, alias="QUORRA_WORKER_MAX_JOBS", ge=1, le=1000)
    worker_lease_ttl_seconds: Seconds = Field(30.0, alias="QUORRA_WORKER_LEASE_TTL")
    worker_handlers: Names = Field((), alias="QUORRA_WORKER_HANDLERS")
    worker_shutdown_grace_seconds: Seconds = Field(25.0, alias="QUORRA_WORKER_SHUTDOWN_GRACE")
    # the completer: finished jobs are settled in one SettleJobs call per batch
    worker_settle_batch: int = Field(100, alias="QUORRA_WORKER_SETTLE_BATCH", ge=1, le=1000)
    worker_settle_interval_seconds: Seconds = Field(0.005, alias="QUORRA_WORKER_SETTLE_INTERVAL")
    # after this many handler threads were abandoned past their job's timeout, the worker stops
    # (exit 3) so that its supervisor starts a fresh process; 0: never
    worker_max_abandoned: int = Field(0, alias="QUORRA_WORKER_MAX_ABANDONED", ge=0, le=100_000)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url.startswith("postgres://"):  # GoQuorra's spelling; SQLAlchemy wants postgresql://
            url = "postgresql://" + url[len("postgres://") :]
        if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg2://")):
            raise ValueError("expected a sqlite:/// or postgresql:// URL")
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url in (None, ""):
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis:// URL")
        return url

    @field_validator("http_addr", "grpc_addr")
    @classmethod
    def _address(cls, address: str) -> str:
        parse_address(address)
        return address

    @field_validator("jwt_secret")
    @classmethod
    def _long_jwt_secret(cls, secret: str | None) -> str | None:
        if secret is not None and len(secret.encode()) < MIN_JWT_SECRET_CHARS:
            raise ValueError(f"an HS256 secret needs at least {MIN_JWT_SECRET_CHARS} bytes")
        return secret

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError("expected an https:// URL")
        return url

    @field_validator("metrics_addr")
    @classmethod
    def _optional_address(cls, address: str | None) -> str | None:
        if address in (None, ""):
            return None
        parse_address(address)
        return address

    @field_validator("worker_queues")
    @classmethod
    def _queue_names(cls, queues: tuple[str, ...]) -> tuple[str, ...]:
        bad = [q for q in queues if not is_valid_name(q, MAX_QUEUE_CHARS)]
        if bad:
            raise ValueError(f"invalid queue names {bad}: use letters, digits and _.:- (1-100 chars)")
        return queues

    @field_validator("secret_keys")
    @classmethod
    def _long_secrets(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if any(len(key) < MIN_SECRET_CHARS for key in keys):
            raise ValueError(f"each key must have at least {MIN_SECRET_CHARS} characters")
        return keys

    @property
    def cursor_keys(self) -> tuple[bytes, ...]:
        """The keys that sign list cursors: QUORRA_SECRET_KEY, or else one derived from each
        API key (an HMAC, so a cursor tells nothing about the key). Every web process of a
        deployment shares its API keys, so they agree on cursors without more configuration."""
        if self.secret_keys:
            return tuple(key.encode() for key in self.secret_keys)
        return tuple(hmac.digest(key.encode(), b"quorra list cursor key", "sha256") for key in self.api_keys)

    @property
    def session_keys(self) -> tuple[bytes, ...]:
        """The keys that sign and encrypt dashboard sessions, each derived (an HMAC with a
        purpose of its own) from a QUORRA_SECRET_KEY or else from an API key: the first
        signs, all verify, so they rotate as the keys they come from do."""
        sources = self.secret_keys or self.api_keys
        return tuple(hmac.digest(key.encode(), b"quorra dashboard session key", "sha256") for key in sources)

    @property
    def uses_dev_api_key(self) -> bool:
        return DEV_API_KEY in self.api_keys

    def authenticator(self) -> Authenticator:
        """The REST API, the dashboard and the gRPC server all authenticate through one of
        these: QUORRA_API_KEY's keys are admins, QUORRA_READONLY_API_KEYS's viewers."""
        return Authenticator(self.api_keys, self.readonly_api_keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build from the environment (``os.environ`` by default); raise InvalidConfig listing
        every bad variable. ``overrides`` are field names that win over the environment."""
        environ = os.environ if environ is None else environ
        aliases = {f.alias: name for name, f in cls.model_fields.items()}
        values: dict[str, object] = {aliases[k]: v for k, v in environ.items() if k in aliases and v != ""}
        values.update(overrides)
        try:
            return cls.model_validate({**values})
        except ValidationError as exc:
            raise InvalidConfig(_describe(exc), details=exc.errors(include_url=False)) from None


def _describe(exc: ValidationError) -> str:
    by_field = {name: f.alias for name, f in Settings.model_fields.items()}
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        lines.append(f"  {by_field.get(field, field)}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid configuration:\n" + "\n".join(lines)


# -- prometheus_client's multi-process mode -----------------------------------------------------


def multiprocess_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """PROMETHEUS_MULTIPROC_DIR. Not a Settings field: prometheus_client reads the variable
    itself (at import) to pick its storage, and we must never disagree with it about the mode."""
    environ = os.environ if environ is None else environ
    return environ.get("PROMETHEUS_MULTIPROC_DIR") or environ.get("prometheus_multiproc_dir") or None


def prepare_multiprocess_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """Create the metrics directory if it is missing; InvalidConfig if it cannot be a writable
    directory. Server entry points call this before importing any metric, because
    prometheus_client opens its files there as soon as a metric is declared."""
    path = multiprocess_dir(environ)
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InvalidConfig(
            f"invalid configuration:\n  PROMETHEUS_MULTIPROC_DIR: cannot create {path}: {exc}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidConfig(f"invalid configuration:\n  PROMETHEUS_MULTIPROC_DIR: {path} is not writable")
    return path


# -- OpenTelemetry ------------------------------------------------------------------------------


def tracing_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether OpenTelemetry's own variables ask for traces. Not Settings fields: the SDK
    reads its variables itself (endpoint, protocol, headers, sampler, service name...), and
    Quorra adds none of its own. Tracing is on when OTEL_TRACES_EXPORTER names an exporter
    (not `none`), or, with it unset, when an OTLP endpoint is given; OTEL_SDK_DISABLED=true
    turns it off whatever the rest says."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
