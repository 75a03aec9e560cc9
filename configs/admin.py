"""The ``admin:`` section. Present means auth is on (see docs/admin.md: which routes are public).

```yaml
admin:
  database: "sqlite:///turnout.db"        # or postgresql://user@host/db
  schema: turnout                          # PostgreSQL only: search_path for every connection
  admin_key: "${TURNOUT_ADMIN_KEY}"        # absent: the admin API answers 403
  redis_prefix: "turnout:"                 # namespace for limits, budgets, pub/sub (when redis.url is set)
  key_cache_ttl: 10s                       # staleness bound for key changes when Redis is not configured
  reservation_lease: 10m                   # a crashed replica's reservations expire after this
  usage:                                   # usage is folded into daily totals in memory, written in batches
    flush_interval: 1s                     # a batch is cut and written at least this often
    batch: 5000                            # ... or once this many requests were metered since the last one
    queue: 50000                           # requests waiting unwritten before a failing batch is spilled
    spill_dir: ./turnout-spill             # batches the store refused; replayed at the next start
  gpu_prices:                              # self-hosted models priced per GPU-hour
    llama-8b: {usd_per_gpu_hour: 2.0, gpus: 1, tokens_per_s: 2500}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from configs.reader import Reader


@dataclass(frozen=True, slots=True)
class GpuPrice:
    """A GPU-hour price turned into a per-token price through the deployment's throughput."""

    usd_per_gpu_hour: float
    gpus: int = 1
    tokens_per_s: float = 1000.0

    def __post_init__(self) -> None:
        if self.tokens_per_s <= 0 or self.gpus < 1 or self.usd_per_gpu_hour < 0:
            raise ValueError("gpu price needs usd_per_gpu_hour >= 0, gpus >= 1, tokens_per_s > 0")

    @property
    def usd_per_token(self) -> float:
        return self.usd_per_gpu_hour * self.gpus / 3600.0 / self.tokens_per_s


@dataclass(frozen=True, slots=True)
class UsageQueueConfig:
    batch: int = 5_000
    flush_interval: float = 1.0
    queue: int = 50_000
    spill_dir: str = "./turnout-spill"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    database: str = "sqlite:///turnout.db"
    admin_key: str | None = None
    schema: str | None = None
    redis_prefix: str = "turnout:"
    key_cache_ttl: float = 10.0
    key_cache_size: int = 100_000
    reservation_lease: float = 600.0
    usage: UsageQueueConfig = field(default_factory=UsageQueueConfig)
    gpu_prices: Mapping[str, GpuPrice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.database.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("database must be a sqlite:// or postgresql:// URL")


def _parse_usage(r: Reader | None) -> UsageQueueConfig:
    if r is None:
        return UsageQueueConfig()
    cfg = UsageQueueConfig(
        batch=r.int("batch", 5_000, min_value=1),
        flush_interval=r.duration("flush_interval", 1.0),
        queue=r.int("queue", 50_000, min_value=1),
        spill_dir=r.str("spill_dir", "./turnout-spill"),
    )
    r.finish()
    return cfg


def _parse_gpu_price(r: Reader) -> GpuPrice:
    price = GpuPrice(
        usd_per_gpu_hour=r.float("usd_per_gpu_hour", min_value=0),
        gpus=r.int("gpus", 1, min_value=1),
        tokens_per_s=r.float("tokens_per_s", 1000.0, min_value=1e-9),
    )
    r.finish()
    return price


def parse_admin(r: Reader | None) -> AdminConfig | None:
    if r is None:
        return None
    database = r.str("database", "sqlite:///turnout.db")
    if not database.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise r.error("database", f"expected a sqlite:// or postgresql:// URL; got {database!r}")
    gpu_prices = {
        name: _parse_gpu_price(Reader(value, r.sub_path(f"gpu_prices.{name}"), r.source))
        for name, value in r.items("gpu_prices")
    }
    cfg = AdminConfig(
        database=database,
        admin_key=r.str("admin_key", None),
        schema=r.str("schema", None),
        redis_prefix=r.str("redis_prefix", "turnout:"),
        key_cache_ttl=r.duration("key_cache_ttl", 10.0),
        key_cache_size=r.int("key_cache_size", 100_000, min_value=1),
        reservation_lease=r.duration("reservation_lease", 600.0),
        usage=_parse_usage(r.section("usage")),
        gpu_prices=gpu_prices,
    )
    r.finish()
    return cfg
