"""One settings object, read from the environment.

Every process (API, worker, CLI, tests) builds its configuration here, so a
farm is configured the same way everywhere: by environment variables, with
defaults that let one machine run the whole stack with nothing installed by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(item.strip() for item in raw.split(",") if item.strip()) or default


def _env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "")
    return Path(raw).expanduser().resolve() if raw else default


# How each field type is read from its variable (field types are strings here: the
# module uses `from __future__ import annotations`).
_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "str": _env, "int": _env_int, "float": _env_float, "bool": _env_bool,
    "Path": _env_path, "tuple[str, ...]": _env_list,
}
# Fields read from the variables other tools already use, not STYLEFARM_<FIELD>.
_ENV_NAMES = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}


@dataclass(frozen=True)
class Settings:
    """Configuration of a stylefarm process.

    Frozen so that a process cannot drift from what its environment said;
    tests derive variants with `dataclasses.replace` (see `Settings.with_`).
    """

    # Where images, results and (by default) the SQLite database live.
    data_dir: Path = field(default_factory=lambda: Path("stylefarm-data").resolve())
    # SQLAlchemy URL; empty means SQLite under data_dir.
    database_url: str = ""
    # Broker URL; empty means "start or find a local one" (only `stylefarm up` does that).
    redis_url: str = ""
    # Largest input image accepted, in pixels (width * height), and in bytes.
    max_input_pixels: int = 50_000_000
    max_upload_bytes: int = 64 * 1024 * 1024
    # Largest output accepted, in pixels (width * height): 8K UHD and then some. The API
    # states it as a bound on each side, that of a square of this many pixels (8192 px: an 8K
    # frame, 7680x4320, fits; the memory plan decides whether a worker can run it).
    max_output_pixels: int = 8192 * 8192
    # Most jobs one POST /v1/batches may create.
    max_batch_jobs: int = 10_000
    # Largest request body other than an upload (JSON): a full 10,000-job batch is ~5 MB.
    max_request_bytes: int = 16 * 1024 * 1024
    # Bearer tokens accepted by the API; empty means no authentication.
    api_keys: tuple[str, ...] = ()
    # Signs the dashboard's session cookie; empty: derived from api_keys (and the database
    # URL), the same in every API process.
    secret_key: str = ""
    # Torch device for the engine: "auto", "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # Convolutions: "auto" (bf16 on a GPU with native bf16, fp32 elsewhere), "fp32" (a GPU
    # then scores like the CPU, for comparing pictures across devices) or "bf16" (on any
    # device, the CPU included: the GPU's arithmetic, for tests and memory measurements).
    precision: str = "auto"
    # Memory a worker's render may plan to use, in MiB; 0 means the device's free memory
    # (the GPU's, or the host's available RAM). The memory plan tiles what does not fit.
    memory_limit_mb: int = 0
    # Memory of the farm's largest worker, in MiB, for the API's check at submit until a
    # worker has published its own (0: no check until then).
    farm_memory_mb: int = 0
    # A job that fails this many deliveries (worker deaths included) is marked failed.
    max_attempts: int = 3
    # Seconds a running job may take before the worker aborts it (soft) / is killed (hard).
    job_soft_time_limit: int = 6 * 3600
    job_hard_time_limit: int = 6 * 3600 + 300
    # Seconds between progress records written to the database by a running job.
    progress_interval: float = 1.0
    # Queue names are "{queue_prefix}high|normal|low": separate prefixes keep test sessions
    # (or two farms on one Redis) from taking each other's messages.
    queue_prefix: str = "stylefarm."
    # A running job whose heartbeat is older than this is taken to have lost its worker.
    lease_seconds: float = 30.0
    # Seconds a delivered but unacknowledged message stays invisible before Redis hands it
    # out again; 0 means "the hard time limit plus ten minutes" (longer than any job).
    visibility_timeout: int = 0
    # Public base URL of the API, used for the result link in webhook payloads.
    public_url: str = "http://127.0.0.1:8000"
    # Webhook deliveries: attempts after the first, and the first backoff in seconds
    # (doubled on each retry).
    webhook_max_retries: int = 8
    webhook_backoff: float = 2.0
    # Whether webhooks may go to private and loopback addresses (a receiver on the farm's
    # own network). Turn off on a farm shared by tenants who must not reach its insides.
    # Link-local addresses (cloud metadata services) are refused either way.
    webhook_private: bool = True
    # Seconds between preview images written by a running job.
    preview_interval: float = 5.0
    # Seconds between reconciler passes (shared/reconcile.py: expired leases, lost messages,
    # stale cancel requests); 0 turns the reconciler off in this process.
    reconcile_interval: float = 3.0
    # Seconds between full audits, which compare every queued job with the messages in
    # Redis (and sweep orphaned files). A Redis that lost its data is audited at once.
    reconcile_audit_interval: float = 60.0
    # Temp files (".name.XXXX.tmp", from atomic writes) older than this many seconds were
    # left by a process that died mid-write, and are removed.
    stale_temp_seconds: float = 3600.0
    # Seconds Celery waits for a new pool child to report that it is up before killing it
    # (worker_proc_alive_timeout, 4 s in Celery): children load no model before reporting,
    # but a loaded machine can still take seconds to import and fork.
    child_start_timeout: float = 60.0
    # Seconds /metrics reuses its count of jobs by status and priority (one GROUP BY over
    # an index): scrapes closer together than this cost the database nothing.
    metrics_cache_seconds: float = 2.0
    # Seconds a dashboard's live fragment is reused for every viewer of the same page: 100
    # open dashboards cost the database what one does.
    ui_live_cache_seconds: float = 1.0

    @classmethod
    def from_env(cls) -> Settings:
        """Each field from STYLEFARM_<FIELD> (see _ENV_NAMES for the exceptions), parsed
        by its type; unset or empty means the default."""
        values = {}
        for spec in fields(cls):
            default = spec.default if spec.default is not MISSING else spec.default_factory()
            name = _ENV_NAMES.get(spec.name, f"STYLEFARM_{spec.name.upper()}")
            values[spec.name] = _PARSERS[spec.type](name, default)
        return cls(**values)

    @property
    def effective_database_url(self) -> str:
        """The configured database, or SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'stylefarm.db'}"

    @property
    def effective_redis_url(self) -> str:
        """The configured broker, or a Redis on this machine's default port."""
        return self.redis_url or "redis://127.0.0.1:6379/0"

    @property
    def effective_visibility_timeout(self) -> int:
        """Longer than the longest job, so a running job's message is never handed out twice."""
        return self.visibility_timeout or self.job_hard_time_limit + 600

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
