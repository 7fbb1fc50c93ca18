"""Settings: the one typed config object. Precedence: flags > env > TOML file > defaults.

Env vars are BANDITD_<SECTION>__<FIELD> (e.g. BANDITD_SERVER__LISTEN, BANDITD_STORE__BACKEND,
BANDITD_POLICIES__CHAT__ALPHA). Only cli.py and server/app.py hold a Settings; they hand core
params (PolicyConfig, ModelSpec, ...) to the objects they build.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
import tomllib
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from banditd.cache.controller import ControllerParams, PagingCost
from banditd.cache.pager import PagingConfig
from banditd.errors import ConfigError
from banditd.features.batcher import BatchingOptions
from banditd.features.encoder import EncoderOptions
from banditd.features.pipeline import CategoricalFeature, TextFeature
from banditd.features.schema import DEFAULT_MAX_ABS_Z, NumericFeature
from banditd.policies.spec import (
    DEFAULT_MAX_COST,
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_REWARD_BOUND,
    PolicyConfig,
    PriceWeights,
    RewardFunction,
)
from banditd.sim.traces import TraceOptions
from banditd.sizing import PolicyShape, estimate
from banditd.types import POLICY_NAME

DAY_S = 86_400.0
MAX_WORKERS = 64


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericFeatureSettings(_Section):
    """One caller-supplied numeric feature: x = (value − mean) / std; `default` when absent."""

    name: str
    default: float = 0.0
    mean: float = 0.0
    std: float = Field(1.0, gt=0)
    min: float | None = Field(None, description="smallest raw value taken ('' = no bound)")
    max: float | None = Field(None, description="largest raw value taken")

    @model_validator(mode="after")
    def _bounds(self) -> NumericFeatureSettings:
        for value in (self.default, self.mean, self.std, self.min, self.max):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"feature {self.name!r}: default/mean/std/min/max must be finite")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"feature {self.name!r}: min must be < max")
        return self


# -- feature pipeline (docs/features.md) ----------------------------------------------------
class CategoricalFeatureSettings(_Section):
    """One categorical feature: one-hot over `vocabulary`, or hashed into `buckets` slots."""

    name: str
    vocabulary: list[str] = Field(default_factory=list)
    buckets: int = Field(0, ge=0, le=65_536)

    @model_validator(mode="after")
    def _one_encoding(self) -> CategoricalFeatureSettings:
        if bool(self.vocabulary) == (self.buckets > 0):
            raise ValueError(f"categorical {self.name!r}: set exactly one of vocabulary, buckets")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"categorical {self.name!r}: vocabulary has duplicates")
        return self

    def to_feature(self) -> CategoricalFeature:
        return CategoricalFeature(self.name, tuple(self.vocabulary), self.buckets)


class TextFeatureSettings(_Section):
    """The text block: an ONNX encoder's unit vector, randomly projected to `dim`."""

    encoder: Literal["ngram", "minilm"] = "ngram"
    model_path: str = Field("", description="'' = the packaged n-gram graph or MiniLM")
    tokenizer_path: str = Field("", description="minilm: tokenizer.json ('' = packaged one)")
    max_tokens: int = Field(256, ge=1, le=8192, description="longer texts are truncated")
    dim: int = Field(32, ge=0, le=1024, description="projected dimension; 0 = encoder's own")
    projection_seed: int = Field(0, ge=0)

    def to_feature(self) -> TextFeature:
        return TextFeature(self.dim, self.projection_seed)


class TextEncoderSettings(_Section):
    """How text encoders run (process-wide; none of this changes the vectors)."""

    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = Field(1, ge=0, le=64, description="0 = onnxruntime default")
    workers: int = Field(1, ge=1, le=64, description="encoder runs in flight (thread pool)")
    max_batch: int = Field(16, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0, le=100, description="micro-batching wait bound")
    cache_size: int = Field(10_000, ge=0, description="LRU of embeddings by text hash; 0 = off")

    def encoder_options(self, text: TextFeatureSettings) -> EncoderOptions:
        return EncoderOptions(
            kind=text.encoder,
            model_path=text.model_path,
            tokenizer_path=text.tokenizer_path,
            max_tokens=text.max_tokens,
            providers=tuple(self.providers),
            intra_op_threads=self.intra_op_threads,
        )

    def batching_options(self) -> BatchingOptions:
        return BatchingOptions(self.workers, self.max_batch, self.max_wait_ms, self.cache_size)


class FeatureSettings(_Section):
    """How a policy turns a request context into its vector:
    [1 (bias), numeric..., categorical one-hot/hashed..., projected text]."""

    numeric: list[NumericFeatureSettings | str] = Field(default_factory=list)
    # Unknown feature names in a request are an error (typos would otherwise be silent).
    allow_unknown: bool = False
    max_abs_z: float = Field(
        DEFAULT_MAX_ABS_Z, gt=0,
        description="numeric features beyond ±this many std from their mean are out of range",
    )  # fmt: skip
    categorical: list[CategoricalFeatureSettings] = Field(default_factory=list)
    text: TextFeatureSettings | None = None

    @property
    def is_numeric_only(self) -> bool:
        return not self.categorical and self.text is None

    @model_validator(mode="after")
    def _unique_categorical(self) -> FeatureSettings:
        names = [c.name for c in self.categorical]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate categorical names in {names}")
        return self

    def categorical_features(self) -> tuple[CategoricalFeature, ...]:
        return tuple(c.to_feature() for c in self.categorical)

    def numeric_features(self) -> tuple[NumericFeature, ...]:
        out = []
        for item in self.numeric:
            f = NumericFeatureSettings(name=item) if isinstance(item, str) else item
            lo = -math.inf if f.min is None else f.min
            hi = math.inf if f.max is None else f.max
            out.append(NumericFeature(f.name, f.default, f.mean, f.std, lo, hi))
        return tuple(out)


class RewardSettings(_Section):
    """reward = Σ weights[m]·metrics[m], clipped to [clip_min, clip_max] when set.

    Used when a Feedback sends metrics instead of a reward (e.g. quality=1, latency_ms=-0.001).
    """

    weights: dict[str, float] = Field(default_factory=lambda: {"quality": 1.0})
    clip_min: float | None = None
    clip_max: float | None = None
    min: float = Field(-DEFAULT_REWARD_BOUND, description="smallest reward learned")
    max: float = Field(DEFAULT_REWARD_BOUND, description="largest reward learned")
    out_of_range: Literal["reject", "clip"] = Field(
        "reject", description="a reward outside [min, max]: refused (INVALID_ARGUMENT) or clipped"
    )
    metric_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="metric -> [min, max]; others within ±1e9"
    )

    @model_validator(mode="after")
    def _finite(self) -> RewardSettings:
        bounds = [self.min, self.max, *self.weights.values()]
        bounds += [v for pair in self.metric_bounds.values() for v in pair]
        bounds += [v for v in (self.clip_min, self.clip_max) if v is not None]
        if not all(math.isfinite(v) for v in bounds):
            raise ValueError("reward weights, bounds and clips must be finite")
        if not self.min <= self.max:
            raise ValueError("reward.min must be <= reward.max")
        if any(not lo <= hi for lo, hi in self.metric_bounds.values()):
            raise ValueError("reward.metric_bounds: each [min, max] needs min <= max")
        return self

    def to_function(self) -> RewardFunction:
        return RewardFunction(
            dict(self.weights), self.clip_min, self.clip_max, self.min, self.max,
            self.out_of_range == "clip", dict(self.metric_bounds),
        )  # fmt: skip


class PriceSettings(_Section):
    """Selection-time price: penalty = cost·candidate.cost + latency_ms·candidate.latency.

    Price what is known when routing here, and leave it out of the reward (or it counts twice).
    """

    cost: float = Field(0.0, ge=0)
    latency_ms: float = Field(0.0, ge=0)
    max_cost: float = Field(DEFAULT_MAX_COST, gt=0, description="largest |candidate.cost|")
    max_latency_ms: float = Field(
        DEFAULT_MAX_LATENCY_MS, gt=0, description="largest candidate.expected_latency_ms"
    )


# -- paging (cache-aware adapter paging, docs/paging.md) ----------------------------------------
class PagingSettings(_Section):
    """Cache-aware adapter paging for a policy whose arms are LoRA adapters (POLAR / POLAR+).

    A Route that names a `replica` prices each non-resident candidate at
    latency_weight · expected paging latency (reward units per ms) and the controller re-plans
    the replica's resident set every epoch of Routes (docs/paging.md).
    """

    enabled: bool = False
    capacity_slots: int = Field(4, ge=0, description="adapters a replica holds, until reported")
    capacity_bytes: int = Field(0, ge=0, description="0 = no byte limit, until reported")
    latency_weight: float = Field(0.0, ge=0, description="reward units per ms of paging")
    default_latency_ms: float = Field(50.0, ge=0, description="load latency when not reported")
    ms_per_mb: float = Field(0.0, ge=0, description="extra load latency per MB of adapter")
    epoch_steps: int = Field(1000, ge=1, description="Routes per epoch (the first, if doubling)")
    doubling: bool = Field(False, description="POLAR+: epoch k lasts epoch_steps * 2^k")
    forced_exploration: float = Field(0.0, ge=0, description="POLAR+ c: n_a < c*sqrt(t)")
    pinned: list[str] = Field(default_factory=list, description="never evicted")
    max_loads_per_epoch: int = Field(0, ge=0, description="0 = no limit")
    max_loads_per_s: float = Field(0.0, ge=0, description="token-bucket rate; 0 = no limit")
    load_burst: int = Field(1, ge=1)
    window: int = Field(512, ge=1, description="recent Routes the utilities are taken over")

    def to_config(self) -> PagingConfig:
        return PagingConfig(
            capacity_slots=self.capacity_slots,
            capacity_bytes=self.capacity_bytes,
            cost=PagingCost(self.latency_weight, self.default_latency_ms, self.ms_per_mb),
            controller=ControllerParams(
                epoch_steps=self.epoch_steps,
                doubling=self.doubling,
                forced_exploration=self.forced_exploration,
                max_loads=self.max_loads_per_epoch,
                pinned=frozenset(self.pinned),
            ),
            max_loads_per_s=self.max_loads_per_s,
            load_burst=self.load_burst,
            window=self.window,
        )


class PolicySettings(_Section):
    algorithm: Literal["linucb", "thompson"] = "linucb"
    alpha: float = Field(1.0, ge=0, description="LinUCB exploration width")
    v: float = Field(0.5, ge=0, description="Thompson posterior scale")
    l2: float = Field(1.0, gt=0, description="ridge strength lambda")
    epsilon: float = Field(0.0, ge=0, le=1, description="uniform exploration floor")
    model: Literal["disjoint", "shared"] = "disjoint"
    arms: list[str] = Field(default_factory=list)
    allow_new_arms: bool = False
    arm_features: int = Field(0, ge=0, le=256)
    max_abs_arm_feature: float = Field(1000.0, gt=0, description="per-arm features within ±this")
    out_of_range: Literal["clip", "reject"] = Field(
        "clip",
        description="Route inputs beyond their bounds (features, arm features, cost, latency):"
        " clipped to the bound (counted) or refused with INVALID_ARGUMENT",
    )
    max_candidates: int = Field(64, ge=1, le=4096)
    features: FeatureSettings = FeatureSettings()
    reward: RewardSettings = RewardSettings()
    price: PriceSettings = PriceSettings()
    reward_wait_s: float = Field(600.0, gt=0, le=30 * DAY_S)
    on_expiry: Literal["default", "drop"] = "default"
    default_reward: float = 0.0
    decay_half_life_s: float = Field(0.0, ge=0, description="0 = no forgetting")
    decay_interval_s: float = Field(0.0, ge=0, description="0 = half_life / 16")
    paging: PagingSettings = PagingSettings()  # docs/paging.md
    # Bounds on what callers can create (docs/deploy.md, "Bounds and memory").
    max_segments: int = Field(1000, ge=0, description="segments with state; 0 = no limit")
    on_segment_limit: Literal["refuse", "evict_lru"] = Field(
        "refuse",
        description="a new segment at max_segments: refused (RESOURCE_EXHAUSTED) or the least"
        " recently used segment is forgotten",
    )
    segment_idle_ttl_s: float = Field(
        30 * DAY_S, ge=0, description="a segment no Route used this long is forgotten; 0 = never"
    )
    max_arms: int = Field(
        1024, ge=1, le=65_536, description="arms a policy routes to, incl. allow_new_arms ones"
    )

    @field_validator("default_reward")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("default_reward must be finite")
        return value

    @model_validator(mode="after")
    def _shared_needs_arm_features(self) -> PolicySettings:
        if len(set(self.arms)) != len(self.arms):
            raise ValueError("arms has duplicates")
        if self.model == "disjoint" and self.arm_features:
            raise ValueError("arm_features needs model = 'shared'")
        if len(self.arms) > self.max_arms:
            raise ValueError(f"{len(self.arms)} arms; max_arms is {self.max_arms}")
        if not self.reward.min <= self.default_reward <= self.reward.max:
            raise ValueError(
                f"default_reward {self.default_reward:g} is outside [reward.min, reward.max]"
            )
        for feature in self.features.numeric_features():
            feature.z_range(self.features.max_abs_z)  # ValueError if its default is out of range
        return self

    def shape(self, name: str, count: int = 1) -> PolicyShape:
        """Its size for the memory estimate (sizing.py). A text block kept at the encoder's own
        dimension (text.dim = 0) counts as 384, MiniLM's (the n-gram encoder's is 128)."""
        f = self.features
        dim = 1 + len(f.numeric) + sum(c.to_feature().width for c in f.categorical)
        if f.text is not None:
            dim += f.text.dim or (384 if f.text.encoder == "minilm" else 128)
        if self.model == "shared":
            return PolicyShape(name, dim * (1 + self.arm_features), 1, self.max_segments, count)
        arms = self.max_arms if self.allow_new_arms else len(self.arms)
        return PolicyShape(name, dim, max(arms, 1), self.max_segments, count)

    def to_config(self, name: str) -> PolicyConfig:
        """The core's view of this policy (no pydantic past this point)."""
        half_life = self.decay_half_life_s
        interval = self.decay_interval_s or (half_life / 16 if half_life else 3600.0)
        factor = 0.5 ** (interval / half_life) if half_life else 1.0
        return PolicyConfig(
            name=name,
            algorithm=self.algorithm,
            alpha=self.alpha,
            v=self.v,
            l2=self.l2,
            epsilon=self.epsilon,
            model=self.model,
            arms=tuple(self.arms),
            allow_new_arms=self.allow_new_arms,
            arm_features=self.arm_features,
            max_candidates=self.max_candidates,
            numeric=self.features.numeric_features(),
            allow_unknown_features=self.features.allow_unknown,
            reward=self.reward.to_function(),
            price=PriceWeights(
                self.price.cost,
                self.price.latency_ms,
                self.price.max_cost,
                self.price.max_latency_ms,
            ),
            reward_wait_s=self.reward_wait_s,
            default_reward=self.default_reward if self.on_expiry == "default" else None,
            decay_factor=factor,
            decay_interval_s=interval,
            clip_out_of_range=self.out_of_range == "clip",
            max_abs_z=self.features.max_abs_z,
            max_abs_arm_feature=self.max_abs_arm_feature,
            max_segments=self.max_segments,
            evict_lru=self.on_segment_limit == "evict_lru",
            segment_ttl_s=self.segment_idle_ttl_s,
            max_arms=self.max_arms,
        )


# -- the trust boundary (docs/security.md) -----------------------------------------------------
class TLSSettings(_Section):
    """TLS on the gRPC listeners (`listen`, `admin_listen`); mTLS with a client CA."""

    cert_file: str = Field("", description="PEM certificate chain; '' = plaintext")
    key_file: str = Field("", description="PEM private key of cert_file")
    client_ca_file: str = Field("", description="PEM CA bundle that signs client certificates")
    require_client_cert: bool = Field(False, description="mTLS: refuse clients without one")
    reload_check_s: float = Field(
        5.0, ge=0, description="re-read the files when they change, checked at most this often"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    @model_validator(mode="after")
    def _complete(self) -> TLSSettings:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("server.tls needs both cert_file and key_file")
        if (self.client_ca_file or self.require_client_cert) and not self.cert_file:
            raise ValueError("server.tls.client_ca_file / require_client_cert need cert_file")
        if self.require_client_cert and not self.client_ca_file:
            raise ValueError("server.tls.require_client_cert needs client_ca_file")
        return self


def is_local(address: str) -> bool:
    """True for a Unix socket or a loopback host:port (what only this machine can reach)."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerSettings(_Section):
    listen: str = "127.0.0.1:50051"
    tls: TLSSettings = TLSSettings()
    allow_insecure: bool = Field(
        False, description="serve plaintext on a non-loopback listen address all the same"
    )
    health_listen: str = Field(
        "", description="host:port of a plaintext listener serving only grpc.health.v1 (probes)"
    )
    admin_listen: str = Field(
        "127.0.0.1:50053",
        description="the Admin service's own listener (loopback or unix:PATH by default); ''"
        " = Admin on `listen`, where an [[auth.callers]] entry with role admin is required",
    )
    metrics_listen: str = Field("127.0.0.1:9464", description="host:port for /metrics; '' = off")
    metrics_tls: bool = Field(False, description="serve /metrics over TLS with server.tls's files")
    grace_s: float = Field(10.0, ge=0, description="drain time on SIGTERM")
    # Deploy (issue #7): after SIGTERM, readiness is NOT_SERVING but RPCs are still accepted for
    # this long, so readiness-aware clients stop sending before the server stops accepting.
    drain_delay_s: float = Field(0.0, ge=0, le=60, description="serve on while NOT_SERVING")
    # Robustness issue, finding 7: then keep accepting until the Router service has answered
    # nothing for this long (at most grace_s), so calls already sent are served, not cancelled
    # (Daemon.drain in server/app.py).
    drain_idle_s: float = Field(
        0.25, ge=0, le=10,
        description="on SIGTERM, serve until no RPC has been answered for this long (<= grace_s)",
    )  # fmt: skip
    # Robustness issue, finding 3: off, a Redis outage only takes health `banditd.v1.Learning`
    # out of service; Route answers degraded and the pod stays ready (server/health_status.py).
    readiness_requires_store: bool = Field(
        False,
        description="readiness (health banditd.v1.Router) NOT_SERVING while the store is down",
    )
    # Issue 16 (docs/deploy.md, "Worker processes"): N processes serve `listen` together
    # (SO_REUSEPORT) under a supervisor that serves /metrics for all of them (server/workers.py).
    workers: int | Literal["auto"] = Field(
        1,
        description="worker processes serving `listen` (Redis store only when > 1); auto = the"
        " CPUs this process may use (affinity and cgroup quota, whichever is smaller)",
    )
    max_message_bytes: int = Field(1 << 20, ge=1024)
    sweep_interval_s: float = Field(1.0, gt=0, description="how often expired decisions settle")
    feedback_batch_max: int = Field(1000, ge=1, description="items per FeedbackBatch call")

    @model_validator(mode="after")
    def _addresses(self) -> ServerSettings:
        """host:port with a port grpc will not wrap (it binds 99999 as 34463), or unix:PATH."""
        for name in ("listen", "admin_listen", "health_listen", "metrics_listen"):
            address: str = getattr(self, name)
            grpc_listener = name != "metrics_listen"
            if not address or (grpc_listener and address.startswith("unix:") and address[5:]):
                continue
            port = address.rpartition(":")[2]
            if ":" not in address or not port.isdigit() or int(port) > 65_535:
                unix = " or unix:PATH" if grpc_listener else ""
                raise ValueError(
                    f"server.{name} = {address!r} is not host:port with a port in 0-65535{unix}"
                )
        return self

    @model_validator(mode="after")
    def _safe_listeners(self) -> ServerSettings:
        """Plaintext only where nobody else can connect, unless the operator says otherwise."""
        for name, address in (("listen", self.listen), ("admin_listen", self.admin_listen)):
            plaintext = address and not self.tls.enabled and not self.allow_insecure
            if plaintext and not is_local(address):
                raise ValueError(
                    f"server.{name} = {address!r} is not a loopback address and server.tls"
                    " is not set, so anyone who can reach it could route, send rewards (or"
                    " run Admin) in plaintext. Set server.tls.cert_file and key_file (and"
                    " client_ca_file for mTLS), bind 127.0.0.1 or unix:PATH, or set"
                    " server.allow_insecure = true to accept the risk"
                )
        if self.metrics_tls and not self.tls.enabled:
            raise ValueError("server.metrics_tls needs server.tls.cert_file and key_file")
        if isinstance(self.workers, int) and not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"server.workers must be 1..{MAX_WORKERS} or 'auto'")
        return self


Role = Literal["route", "feedback", "admin"]


class CallerSettings(_Section):
    """One caller: how it proves who it is, and what it may do on which policies."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    identities: list[str] = Field(
        default_factory=list,
        description="mTLS identities: a URI SAN (spiffe://...) or CN=<common name>",
    )
    token_sha256: list[str] = Field(
        default_factory=list, description="hex SHA-256 of its bearer tokens (several: rotation)"
    )
    roles: list[Role] = Field(default_factory=lambda: list[Role](["route", "feedback"]))
    policies: list[str] = Field(default_factory=lambda: ["*"], description="'*' = every policy")

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("token_sha256 entries are 64 lowercase hex digits")
        return value


class AuthSettings(_Section):
    """Who may call what (docs/security.md). No callers: auth is off, every RPC is allowed on
    its listener (Admin's own listener is loopback by default)."""

    callers: list[CallerSettings] = Field(default_factory=list)
    tokens_file: str = Field(
        "", description="lines '<caller name> <sha256 hex of a token>' (a mounted Secret)"
    )

    @model_validator(mode="after")
    def _unique(self) -> AuthSettings:
        names = [c.name for c in self.callers]
        if len(set(names)) != len(names):
            raise ValueError(f"auth.callers: duplicate names in {names}")
        return self


# -- traces (docs/deploy.md, "Traces") ------------------------------------------------------------
class TracingSettings(_Section):
    """OpenTelemetry traces over OTLP (the `otel` extra). Off, banditd imports nothing of
    OpenTelemetry. Each empty field falls back to its OTEL_* variable, then the SDK default."""

    enabled: bool = False
    endpoint: str = Field(
        "",
        description="OTLP collector, e.g. http://otel-collector:4317 (grpc) or"
        " http://otel-collector:4318/v1/traces (http/protobuf); '' ="
        " OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else localhost",
    )
    protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc",
        description="grpc comes with the otel extra; http/protobuf needs"
        " opentelemetry-exporter-otlp-proto-http installed too",
    )
    service_name: str = Field("", description="'' = OTEL_SERVICE_NAME, else banditd")
    sample_ratio: float | None = Field(
        None, ge=0, le=1,
        description="share of traces started here that are kept; a caller's traceparent decides"
        " for its own trace (parent-based); unset = OTEL_TRACES_SAMPLER(_ARG), else keep all",
    )  # fmt: skip
    headers: str = Field(
        "",
        description="k1=v1,k2=v2 sent with each export (e.g. an API key: prefer env"
        " BANDITD_TRACING__HEADERS from a Secret); '' = OTEL_EXPORTER_OTLP_(TRACES_)HEADERS",
    )

    @field_validator("headers")
    @classmethod
    def _pairs(cls, value: str) -> str:
        for item in filter(None, (i.strip() for i in value.split(","))):
            if not item.partition("=")[0].strip() or "=" not in item:
                raise ValueError("tracing.headers is k1=v1,k2=v2 (as OTEL_EXPORTER_OTLP_HEADERS)")
        return value

    @model_validator(mode="after")
    def _installed(self) -> TracingSettings:
        """Enabled needs the SDK and the protocol's exporter (check-config says so, too)."""
        if not self.enabled:
            return self
        exporter = "grpc" if self.protocol == "grpc" else "http"
        need = ("opentelemetry.sdk", f"opentelemetry.exporter.otlp.proto.{exporter}")
        for module in need:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                extra = "the otel extra (pip install 'banditd[otel]')"
                if exporter == "http":
                    extra += " and opentelemetry-exporter-otlp-proto-http"
                raise ValueError(f"tracing.enabled needs {extra}: {module} is not installed")
        return self

    def header_pairs(self) -> tuple[tuple[str, str], ...]:
        """headers as (name, value) pairs, values percent-decoded as OTEL_* headers are."""
        pairs = []
        for item in filter(None, (i.strip() for i in self.headers.split(","))):
            name, _, value = item.partition("=")
            pairs.append((name.strip().lower(), urllib.parse.unquote(value.strip())))
        return tuple(pairs)


# --- store.redis (shared state; docs/redis.md) ----------------------------------------------
class RedisSettings(_Section):
    """Where the shared state lives: one Redis, or a Redis Cluster (cluster = true)."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// (TLS)")
    username: str = Field("", description="ACL user ('' = default user or the URL's)")
    password: str = Field("", description="ACL password ('' = none or the URL's)")
    tls_ca_file: str = Field("", description="CA bundle to verify the server (rediss://)")
    tls_cert_file: str = Field("", description="client certificate for mutual TLS")
    tls_key_file: str = Field("", description="client key for mutual TLS")
    tls_verify: bool = Field(True, description="verify the server certificate")
    key_prefix: str = Field("banditd", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    timeout_s: float = Field(0.25, gt=0, description="bound on each call; then degraded")
    cluster: bool = Field(False, description="url names one node of a Redis Cluster")
    pending_grace_s: float = Field(3600.0, ge=0, description="pending outlives its deadline")
    health_interval_s: float = Field(1.0, gt=0, description="store health ping period")
    max_buffered: int = Field(10_000, ge=0, description="decisions kept while Redis is down")
    buffer_max_age_s: float = Field(
        600.0, gt=0, le=DAY_S,
        description="a decision buffered during an outage and not flushed within this is given"
        " up; until then other replicas answer its feedback UNAVAILABLE (retry), not NOT_FOUND",
    )  # fmt: skip
    spill_path: str = Field(
        "", description="file for buffered decisions on shutdown, read back at start ('' = off)"
    )
    cache_mb: int = Field(
        64, ge=1, description="derived model state a replica caches (least recently used goes)"
    )
    max_connections: int = Field(
        64, ge=2, description="client pool size; calls beyond it wait for a free connection"
    )
    key_layout: Literal["segment", "policy"] = Field(
        "segment",
        description="'segment': a Cluster hash slot per (policy, segment tag), so a policy's"
        " segments spread over shards (state in the old layout is migrated at start);"
        " 'policy': every key of a policy in one slot, the layout of versions before segment"
        " tags, for a rolling upgrade from one (docs/redis.md, 'Upgrading')",
    )  # fmt: skip
    coalesce: bool = Field(
        True,
        description="send the scripts of concurrent Routes and Feedbacks as one pipeline per"
        " event-loop turn over one connection (false: one pooled call each)",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("store.redis.url must start with redis:// or rediss://")
        return value


class StoreSettings(_Section):
    backend: Literal["memory", "redis"] = "memory"
    max_pending: int = Field(
        200_000, ge=1, description="memory backend: decisions awaiting a reward (~0.7-1 kB each)"
    )
    tombstone_ttl_s: float = Field(DAY_S, gt=0, description="how long duplicates are recognised")
    max_tombstones: int = Field(
        500_000, ge=1,
        description="memory backend: ended decisions remembered (~190 B each), oldest first out",
    )  # fmt: skip
    redis: RedisSettings = RedisSettings()


class Settings(BaseSettings):
    """Everything banditd can be told. Precedence: flags > env > TOML > defaults."""

    model_config = SettingsConfigDict(
        env_prefix="BANDITD_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    seed: int | None = Field(None, description="RNG seed for reproducible exploration")
    trace_path: str = Field("", description="JSONL decision/outcome trace; '' = off")
    # Trace retention and privacy (docs/simulator.md; banditd/sim/traces.py has the rules).
    trace_max_mb: int = Field(
        128, ge=1,
        description="rotate before the trace exceeds this; (keep_files + 1) x this on disk",
    )  # fmt: skip
    trace_keep_files: int = Field(
        4, ge=0, description="rotated traces kept (<trace_path>.1 .. .N); 0 = deleted at rotation"
    )
    trace_max_age_s: float = Field(
        7 * DAY_S, ge=0, allow_inf_nan=False,
        description="rotated traces last written longer ago are deleted, and the current one is"
        " rotated once its first record is this old; 0 = no age limit",
    )  # fmt: skip
    trace_context: Literal["full", "hash", "drop"] = Field(
        "full",
        description="what a decision keeps of the request: full (replayable), hash (names and"
        " x kept, values hashed or nulled: OPE only) or drop (no context, x or scores)",
    )
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    auto_create_policies: bool = False
    max_auto_policies: int = Field(
        100, ge=0, description="policies a replica creates from policy_template at most"
    )
    policy_template: PolicySettings = PolicySettings()
    policies: dict[str, PolicySettings] = Field(default_factory=dict)
    text_encoder: TextEncoderSettings = TextEncoderSettings()  # docs/features.md
    auth: AuthSettings = AuthSettings()  # docs/security.md
    tracing: TracingSettings = TracingSettings()  # docs/deploy.md, "Traces"

    @model_validator(mode="after")
    def _admin_is_guarded(self) -> Settings:
        server = self.server
        if any(c.identities for c in self.auth.callers) and not server.tls.require_client_cert:
            raise ValueError(
                "auth.callers with identities need server.tls.require_client_cert = true (and"
                " client_ca_file): grpc asks for client certificates only when it requires them"
            )
        admin_callers = [c for c in self.auth.callers if "admin" in c.roles]
        if not server.admin_listen and not is_local(server.listen) and not admin_callers:
            raise ValueError(
                "server.admin_listen = '' serves Admin on server.listen, which is not a loopback"
                " address, and no [[auth.callers]] entry has role admin: anyone who can reach"
                " the port could reset or overwrite models. Keep Admin on its own loopback"
                " listener (the default), or configure callers with role admin"
            )
        return self

    @field_validator("policies")
    @classmethod
    def _names(cls, value: dict[str, PolicySettings]) -> dict[str, PolicySettings]:
        for name in value:
            if not POLICY_NAME.fullmatch(name):
                raise ValueError(f"policy name {name!r} must match {POLICY_NAME.pattern}")
        return value

    def callers(self) -> list[tuple[str, list[str], list[str], list[str], list[str]]]:
        """auth.callers as plain rows for server/auth.py (no pydantic past this point)."""
        return [
            (c.name, list(c.identities), list(c.token_sha256), list(c.roles), list(c.policies))
            for c in self.auth.callers
        ]

    def trace_options(self) -> TraceOptions:
        """The trace writer's retention and redaction (no pydantic past this point)."""
        return TraceOptions(
            self.trace_max_mb << 20, self.trace_keep_files, self.trace_max_age_s,
            self.trace_context,
        )  # fmt: skip

    def policy_configs(self) -> dict[str, PolicyConfig]:
        return {name: p.to_config(name) for name, p in self.policies.items()}

    def memory_estimate(self) -> dict[str, int | None]:
        """Worst-case bytes the bounds allow, by part (sizing.py; None: unbounded)."""
        shapes = [p.shape(name) for name, p in self.policies.items()]
        if self.auto_create_policies and self.max_auto_policies:
            shapes.append(self.policy_template.shape("(auto)", self.max_auto_policies))
        store = self.store
        return estimate(
            store.backend, shapes, store.max_pending, store.max_tombstones,
            store.redis.max_buffered, store.redis.cache_mb << 20,
        )  # fmt: skip

    def paging_configs(self) -> dict[str, PagingConfig]:
        """Paging rules of the policies that page adapters (docs/paging.md)."""
        return {n: p.paging.to_config() for n, p in self.policies.items() if p.paging.enabled}


def load_settings(
    config: Path | None = None,
    flags: Sequence[str] = (),
    *,
    prog: str = "banditd serve",
    source: str | None = None,
) -> Settings:
    """Merge defaults, the TOML file (if any), BANDITD_* env vars and command-line flags.

    A config file that is missing, a directory, unreadable or not TOML is a ConfigError naming
    it as `source` does (e.g. "--config banditd.toml", "BANDITD_CONFIG=banditd.toml"); a bad
    flag is a pydantic_settings.SettingsError whose message starts "error parsing CLI" (`prog`
    is the command its usage would name).
    """
    source = source or f"config file {config}"
    if config is not None:
        if config.is_dir():
            raise ConfigError(f"{source} is a directory, not a TOML file")
        if not config.exists():
            raise ConfigError(f"{source} does not exist")

    class _Merged(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
            return tuple(sources)

    kwargs: dict[str, Any] = {}
    if flags:
        kwargs["_cli_parse_args"] = list(flags)
        kwargs["_cli_prog_name"] = prog
        kwargs["_cli_exit_on_error"] = False  # SettingsError, not argparse's usage dump + exit
    try:
        return _Merged(**kwargs)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(config, exc)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text, so not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None


def toml_error(path: Path | None, exc: tomllib.TOMLDecodeError) -> str:
    """'PATH:LINE:COLUMN: invalid TOML: what' for a syntax error in a TOML file.

    Python 3.14 has exc.msg, exc.lineno and exc.colno; 3.11-3.13 only end the message with
    "(at line L, column C)"."""
    text = str(getattr(exc, "msg", exc))
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", text, re.DOTALL)
    if found is not None:
        text, line, column = found.groups()
    where = f"{path}:{line}:{column}" if line is not None else str(path)
    return f"{where}: invalid TOML: {text}"
