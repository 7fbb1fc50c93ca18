"""The composition root: Settings -> store, extractors, router, gRPC server; serve until SIGTERM.

Shutdown order (SIGTERM or SIGINT), in `Daemon.stop`: health goes NOT_SERVING (readiness fails,
Kubernetes stops sending traffic), RPCs are still accepted for `drain_delay_s`, then for as long
as RPCs already sent are still being answered (`Daemon.drain`, until none was for
`drain_idle_s`), then the server stops accepting and gives handlers still running what is left
of `grace_s`, then the expiry sweeper stops, one last sweep settles decisions already past their
deadline, the trace is flushed and the store closed. Keep the pod's
terminationGracePeriodSeconds above drain_delay_s + grace_s (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import grpc
import numpy as np
import structlog
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.cache.pager import Pager
from banditd.cache.residency import InMemoryResidencyStore
from banditd.config import Settings
from banditd.errors import ConfigError, StateUnavailableError
from banditd.features.batcher import BatchingEncoder
from banditd.features.encoder import EncoderOptions, OnnxTextEncoder
from banditd.features.pipeline import PipelineExtractor
from banditd.features.schema import NumericExtractor
from banditd.feedback import ids
from banditd.policies.spec import PolicyConfig
from banditd.router import Router
from banditd.server.admin_service import AdminService
from banditd.server.auth import Authorizer
from banditd.server.cgroup import memory_limit
from banditd.server.guard import Guard
from banditd.server.health_status import HealthStatus
from banditd.server.metrics import Count, Counts, Metrics, serve_metrics
from banditd.server.preflight import check_files, check_listen, listen_error
from banditd.server.service import RouterService
from banditd.server.tls import TLSFiles, server_credentials
from banditd.server.workers import WorkerRole, spill_adoptions
from banditd.sim.traces import JsonlTraceWriter
from banditd.state.connection import RedisConnection, connect
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_admin import RedisAdmin
from banditd.state.redis_store import RedisModelStore, RedisStoreParams
from banditd.types import FeatureExtractor, ModelStore

if TYPE_CHECKING:  # the otel extra: imported at run time only when tracing is enabled
    from opentelemetry.sdk.trace.export import SpanExporter

    from banditd.server.tracing import Tracing

log = structlog.get_logger("banditd.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Router"].full_name
ADMIN_SERVICE_NAME = apb.DESCRIPTOR.services_by_name["Admin"].full_name


class SystemClock:
    def now(self) -> float:
        return time.time()


def extractor_factory(
    settings: Settings, encoders: dict[EncoderOptions, BatchingEncoder] | None = None
) -> Callable[[PolicyConfig], FeatureExtractor]:
    """Numeric-only policies get a NumericExtractor; others a PipelineExtractor.

    Text encoders are shared: one InferenceSession (and one batcher, cache and worker pool)
    per distinct encoder config per process, whatever the number of policies using it. They
    are kept in `encoders`, so the daemon can export their cache counters and close them.
    """
    encoders = {} if encoders is None else encoders

    def encoder_for(options: EncoderOptions) -> BatchingEncoder:
        if options not in encoders:
            encoder = OnnxTextEncoder(options)
            encoders[options] = BatchingEncoder(encoder, settings.text_encoder.batching_options())
            log.info(
                "encoder.loaded", kind=options.kind, model=str(encoder.model_path),
                dim=encoder.dim, fingerprint=encoder.fingerprint,
            )  # fmt: skip
        return encoders[options]

    def build(policy: PolicyConfig) -> FeatureExtractor:
        declared = settings.policies.get(policy.name)
        features = (declared or settings.policy_template).features
        if features.is_numeric_only:
            return NumericExtractor(
                policy.numeric, policy.allow_unknown_features, policy.max_abs_z,
                policy.clip_out_of_range,
            )  # fmt: skip
        text = features.text
        try:
            encoder = None if text is None else encoder_for(
                settings.text_encoder.encoder_options(text))  # fmt: skip
        except ConfigError as exc:  # name the setting: the encoder knows only its files
            section = f"policies.{policy.name}" if declared else "policy_template"
            raise ConfigError(f"{section}.features.text: {exc}") from None
        return PipelineExtractor(
            policy.numeric,
            features.categorical_features(),
            text=None if text is None else text.to_feature(),
            encoder=encoder,
            allow_unknown=policy.allow_unknown_features,
            max_abs_z=policy.max_abs_z,
            clip=policy.clip_out_of_range,
        )

    return build


def build_store(settings: Settings, role: WorkerRole | None = None) -> ModelStore:
    if settings.store.backend == "memory":
        return InMemoryModelStore(
            max_pending=settings.store.max_pending,
            max_tombstones=settings.store.max_tombstones,
            tombstone_ttl_s=settings.store.tombstone_ttl_s,
        )
    if settings.store.backend == "redis":
        return build_redis_store(settings, role)
    raise NotImplementedError(f"store backend {settings.store.backend!r} is not available yet")


# --- redis backend (docs/redis.md) ---------------------------------------------------------
def decision_ids(settings: Settings) -> Callable[[str, str], str]:
    """How Route names decisions: with their segment's tag, unless the Redis store keeps the
    layout before segment tags (key_layout = "policy"), whose replicas expect untagged ids."""
    redis = settings.store.backend == "redis" and settings.store.redis.key_layout == "policy"
    return ids.untagged_decision_id if redis else ids.new_decision_id


def build_redis_store(settings: Settings, role: WorkerRole | None = None) -> RedisModelStore:
    """`role`: as a worker, the store also reads the spill files a run with another worker
    count left behind that fall to it (server/workers.py `adopted_files`)."""
    r = settings.store.redis
    conn = RedisConnection(
        r.url, r.username, r.password, r.tls_ca_file, r.tls_cert_file, r.tls_key_file,
        r.tls_verify, r.timeout_s, r.cluster, r.max_connections,
    )  # fmt: skip
    params = RedisStoreParams(
        prefix=r.key_prefix, timeout_s=r.timeout_s, pending_grace_s=r.pending_grace_s,
        tombstone_ttl_s=settings.store.tombstone_ttl_s, max_buffered=r.max_buffered,
        buffer_max_age_s=r.buffer_max_age_s, spill_path=r.spill_path, cache_bytes=r.cache_mb << 20,
        max_connections=r.max_connections, coalesce=r.coalesce, key_layout=r.key_layout,
        spill_adopt=spill_adoptions(r.spill_path, role),
    )  # fmt: skip
    return RedisModelStore(connect(conn), params)


async def sync_arms(daemon: Daemon, store: RedisModelStore) -> None:
    """Adopt arm lists another replica's Admin service stored."""
    admin = RedisAdmin(store)
    for name in daemon.router.policy_names:
        try:
            arms = await admin.arm_list(name)
        except StateUnavailableError:
            return
        if arms is not None and tuple(arms) != daemon.router.arms(name):
            daemon.router.set_arms(name, arms)
            log.info("admin.arms_synced", policy=name, arms=arms)


async def watch_store(daemon: Daemon, interval_s: float) -> None:
    """The learning path follows Redis: ping it every interval_s, export the store's counters."""
    store = daemon.store
    assert isinstance(store, RedisModelStore)
    seen = {"unavailable": 0, "unrecorded": 0, "lost_pending": 0, "busy": 0}
    serving: bool | None = None
    while True:
        try:
            serving = await _watch_once(daemon, store, serving, seen)
        except Exception:  # the watcher must outlive any surprise; it is the store's health
            log.exception("state.watch_failed")
        await asyncio.sleep(interval_s)


async def _watch_once(
    daemon: Daemon, store: RedisModelStore, serving: bool | None, seen: dict[str, int]
) -> bool:
    m = daemon.metrics
    ok = await store.ping()
    if ok is not serving:  # liveness never follows Redis; readiness only if the operator asked
        await daemon.status.store(ok)
        log.log(20 if ok else 30, "state.health", redis_ok=ok)
    st = store.stats
    for name, counter in (
        ("unavailable", m.store_errors), ("unrecorded", m.decisions_unrecorded),
        ("lost_pending", m.pending_lost), ("busy", m.store_busy),
    ):  # fmt: skip
        now = getattr(st, name)
        counter.inc(now - seen[name])
        seen[name] = now
    if ok:  # (the ping brought the Redis to the store's key layout first: layout.py)
        await sync_arms(daemon, store)
    m.hot.degraded = 0 if ok else 1
    m.outage_buffered.set(st.buffered)
    return ok


@dataclass
class Daemon:
    """Everything `serve` runs; tests build one in-process with `build_daemon`."""

    settings: Settings
    router: Router
    store: ModelStore
    metrics: Metrics
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    trace: JsonlTraceWriter | None = None
    sweeper: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    pager: Pager | None = None
    encoders: dict[EncoderOptions, BatchingEncoder] = field(default_factory=dict)
    # "admin" (server.admin_listen), "health" (server.health_listen): (server, port)
    listeners: dict[str, tuple[grpc.aio.Server, int]] = field(default_factory=dict)
    tracing: Tracing | None = None  # [tracing] enabled: its spans are flushed on stop
    _exported: dict[str, int] = field(default_factory=dict)
    status: HealthStatus = field(init=False)

    def __post_init__(self) -> None:
        requires_store = self.settings.server.readiness_requires_store
        self.status = HealthStatus(self.health, self.metrics, requires_store)

    async def start(self) -> None:
        store_up = True
        if isinstance(self.store, RedisModelStore):
            # Connect (and, for a Cluster, learn the slot map) before the first RPC: redis-py's
            # cluster client breaks connections if many requests race its lazy initialisation.
            store_up = await self.store.ping()
        await self.server.start()
        for server, _ in self.listeners.values():
            await server.start()
        await self.status.start(store_up)
        if isinstance(self.store, RedisModelStore):
            interval = self.settings.store.redis.health_interval_s
            self.tasks.append(asyncio.create_task(watch_store(self, interval)))

    async def stop(self, grace_s: float | None = None) -> None:
        """Readiness off, drain in-flight RPCs, stop the sweeper, settle, flush, close."""
        grace_s = self.settings.server.grace_s if grace_s is None else grace_s
        for task in self.tasks:  # first: the store watcher must not flip readiness back on
            await _cancel(task)
        await self.status.stop()  # every health name NOT_SERVING: readiness off
        if self.settings.server.drain_delay_s:
            await asyncio.sleep(self.settings.server.drain_delay_s)
        waited_s = await self.drain(grace_s)
        await self.server.stop(max(grace_s - waited_s, 0.0))
        for server, _ in self.listeners.values():  # Admin and probes: after the traffic
            await server.stop(0.5)
        if self.sweeper is not None:  # before the store closes: a sweep must not race close()
            await _cancel(self.sweeper)
            self.sweeper = None
        log.info("server.drained", settled=await self.sweep_once())
        if self.trace is not None:
            self.trace.flush()
            self.trace.close()
        for encoder in self.encoders.values():
            encoder.close()
        await self.store.close()
        if self.tracing is not None:  # last: the final sweep's spans go out too
            await asyncio.to_thread(self.tracing.shutdown)

    async def drain(self, budget_s: float) -> float:
        """Serve on until no RPC has been answered for `drain_idle_s`, at most `budget_s`.

        grpc.aio's `server.stop(grace)` gives its grace only to calls already inside a handler.
        grpc core drops every call its transport has received but the application has not yet
        asked for (`grpc_server_shutdown_and_notify` zombifies the unmatched calls), and
        grpc.aio asks for one call per method at a time, so under load nearly every call in
        flight is such a call: 60 of 64 came back CANCELLED after a 17 ms "drain". Answers
        keep coming while the loop works through that backlog; once none has come for
        `drain_idle_s` it is gone, and `stop` cancels nothing a client had already sent. A
        client that keeps sending after readiness went off keeps the server busy until the
        budget runs out. Returns the seconds spent.
        """
        loop = asyncio.get_running_loop()
        idle_s = self.settings.server.drain_idle_s
        started = quiet_since = loop.time()
        answered = self.metrics.hot.answered()
        while (now := loop.time()) - quiet_since < idle_s and now - started < budget_s:
            await asyncio.sleep(min(idle_s / 4, started + budget_s - now))
            if (count := self.metrics.hot.answered()) != answered:
                answered, quiet_since = count, loop.time()
        waited_s = loop.time() - started
        if budget_s <= 0:
            return waited_s
        if loop.time() - quiet_since < idle_s:
            log.warning(
                "server.drain_timed_out", waited_s=round(waited_s, 3),
                hint="RPCs kept coming after readiness went off; the rest are cancelled",
            )  # fmt: skip
        else:
            log.info("server.quiesced", waited_s=round(waited_s, 3))
        return waited_s

    async def sweep_forever(self) -> None:
        """Settle expired decisions every sweep_interval_s (default reward or drop)."""
        interval = self.settings.server.sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.sweep_once()

    async def sweep_once(self) -> int:
        self.warn_windows()
        try:
            settled = await self.router.expire()
        except StateUnavailableError as exc:  # counted by the store watcher; retried next tick
            log.warning("feedback.sweep_skipped", error=str(exc))
            return 0
        except Exception:
            self.metrics.store_errors.inc()
            log.exception("feedback.sweep_failed")
            return 0
        for s in settled:
            self.metrics.hot.outcome(s.outcome.value)
            log.info("feedback.expired", decision_id=s.decision_id, outcome=s.outcome.value,
                     arm=s.arm, reward=s.reward)  # fmt: skip
        pending = getattr(self.store, "pending_count", None)
        if isinstance(pending, int):
            self.metrics.pending.set(pending)
        self.export_stats()
        return len(settled)

    def warn_windows(self) -> None:
        """Log policies whose rewards come after their reward window (rate-limited)."""
        for w in self.router.window_warnings():
            hint = (
                f"raise policies.{w.policy}.reward_wait_s to at least {w.suggested_s:.0f} s, or"
                " send rewards sooner: late rewards are refused and the expiry rule learns"
                " instead"
            )
            log.warning(
                f"feedback.{w.kind}", policy=w.policy, reward_wait_s=w.window_s, late=w.late,
                max_late_by_s=round(w.max_late_by_s, 3), expired_share=round(w.expired_share, 3),
                hint=hint,
            )  # fmt: skip

    def export_stats(self) -> None:
        """Move the pager's and encoders' cumulative counts into the Prometheus counters."""
        m = self.metrics
        totals: dict[str, tuple[Counter, int]] = {}
        if self.pager is not None:
            totals["loads"] = (m.adapter_cache_loads, self.pager.stats.loads)
            totals["evictions"] = (m.adapter_cache_evictions, self.pager.stats.evictions)
        stats = [encoder.stats for encoder in self.encoders.values()]
        hits = sum(s.cache_hits for s in stats)
        totals["feature_hits"] = (m.feature_cache_hits, hits)
        totals["feature_misses"] = (m.feature_cache_misses, sum(s.requests for s in stats) - hits)
        for name, (counter, total) in totals.items():
            delta = total - self._exported.get(name, 0)
            if delta > 0:
                counter.inc(delta)
                self._exported[name] = total


def guard_counts(router: Router, store: ModelStore) -> list[Count]:
    """What the input bounds and state guards did so far (exported at scrape time)."""
    redis = store.stats if isinstance(store, RedisModelStore) else None
    memory = store if isinstance(store, InMemoryModelStore) else None
    return [
        ("banditd_inputs_clipped", "Route inputs clipped to their bounds (out_of_range = clip)",
         "policy", router.clipped()),
        ("banditd_routes_nonfinite", "Routes refused because a model gave non-finite scores",
         None, router.nonfinite_routes),
        ("banditd_updates_refused",
         "Rewards refused because the model would turn non-finite (UpdateRefusedError)", None,
         redis.refused_updates if redis else memory.refused_updates if memory else 0),
        ("banditd_segments_expired", "Segments forgotten after segment_idle_ttl_s unused", None,
         redis.expired_segments if redis else memory.expired_segments if memory else 0),
        ("banditd_segments_evicted",
         "Segments forgotten at max_segments (on_segment_limit = evict_lru; memory store)", None,
         memory.evicted_segments if memory else 0),
        ("banditd_outage_buffer_expired",
         "Buffered decisions given up after store.redis.buffer_max_age_s", None,
         redis.buffer_expired if redis else 0),
        ("banditd_rewards_late",
         "Rewards refused because they came after their decision's reward window", "policy",
         router.window.late_counts()),
        ("banditd_decisions_expired",
         "Decisions this replica settled by the expiry rule (no reward within the window)",
         "policy", router.window.expired_counts()),
    ]  # fmt: skip


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for it to end, cancelling again if it swallowed a cancellation.

    One cancel is not always enough on Python 3.11: when it lands just as a timeout inside
    redis-py expires, the timeout can turn it into a TimeoutError, which a watcher loop catches
    and carries on (a test's teardown once hung on that for 120 s).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("server.task_failed", task=task.get_name(), error=repr(exc))


def start_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing | None:
    """The daemon's tracer provider when [tracing] is enabled, else None (and OpenTelemetry is
    not imported). `exporter` replaces OTLP (tests pass an in-memory span exporter)."""
    t = settings.tracing
    if not t.enabled:
        return None
    from banditd.server import tracing  # the otel extra (checked installed by TracingSettings)

    options = tracing.TracingOptions(
        t.endpoint, t.protocol, t.service_name, t.sample_ratio, t.header_pairs()
    )
    log.info("tracing.started", protocol=t.protocol, endpoint=t.endpoint or "(OTEL_* env)",
             sample_ratio=t.sample_ratio)  # fmt: skip
    return tracing.Tracing(options, exporter)


def build_router(
    settings: Settings,
    store: ModelStore,
    clock: SystemClock,
    trace: JsonlTraceWriter | None,
    encoders: dict[EncoderOptions, BatchingEncoder],
    role: WorkerRole | None = None,
) -> tuple[Router, Pager | None]:
    """The Router with its policies, their feature extractors (text encoders loaded into
    `encoders`, the template's too if policies are auto-created) and the adapter pager; as
    worker `role`, exploration is seeded with (seed, index). ConfigError if a policy cannot be
    built."""
    template = settings.policy_template.to_config("template")
    paging = settings.paging_configs()  # docs/paging.md: residency is in process for now
    pager = Pager(paging, InMemoryResidencyStore()) if paging else None
    extractor_for = extractor_factory(settings, encoders)
    if settings.auto_create_policies:  # its text encoder, now rather than at the first Route
        extractor_for(replace(template, name="(policy_template)"))
    router = Router(
        settings.policy_configs(),
        extractor_for,
        store,
        clock,
        np.random.default_rng(
            settings.seed if role is None or settings.seed is None else (settings.seed, role.index)
        ),
        trace=trace,
        template=template if settings.auto_create_policies else None,
        pager=pager,
        max_auto_policies=settings.max_auto_policies,
        new_id=decision_ids(settings),
    )
    return router, pager


def check_startup(settings: Settings) -> None:
    """Everything `serve` refuses at start, short of listening and reaching Redis (runtime
    conditions): the files the config names, and the policies built as serve builds them
    (text encoders loaded, then closed). Writes nothing. `banditd check-config` runs it."""
    check_files(settings)
    encoders: dict[EncoderOptions, BatchingEncoder] = {}
    try:
        build_router(settings, InMemoryModelStore(), SystemClock(), None, encoders)
    finally:
        for encoder in encoders.values():
            encoder.close()


def build_daemon(
    settings: Settings,
    store: ModelStore | None = None,
    clock: SystemClock | None = None,
    span_exporter: SpanExporter | None = None,
    role: WorkerRole | None = None,
) -> Daemon:
    """Everything `serve` runs, not started. `span_exporter` (with [tracing] enabled) takes the
    spans instead of OTLP: tests read them from an in-memory exporter. `role`: one of several
    worker processes (server/workers.py): its listeners share their ports (SO_REUSEPORT),
    Admin is worker 0's alone, exploration is seeded with (seed, index)."""
    check_files(settings)  # as check-config does; then the parts that read them cannot fail
    store = store if store is not None else build_store(settings, role)
    # Tracing wraps things here, once (not a flag the handlers test): the Router's view of a
    # Redis store, and the Router service of each listener.
    tracer = start_tracing(settings, span_exporter)
    traced_store = store
    if tracer is not None and isinstance(store, RedisModelStore):
        traced_store = tracer.store(store, "redis")
    trace = None
    if settings.trace_path:  # created 0600, rotated and redacted per settings.trace_*
        trace = JsonlTraceWriter(Path(settings.trace_path), settings.trace_options())
    encoders: dict[EncoderOptions, BatchingEncoder] = {}
    router, pager = build_router(
        settings, traced_store, clock or SystemClock(), trace, encoders, role
    )
    metrics = Metrics()
    metrics.registry.register(Counts(lambda: guard_counts(router, store)))
    server_settings = settings.server
    authorizer = Authorizer.from_config(settings.callers(), settings.auth.tokens_file)
    t = server_settings.tls
    files = TLSFiles(
        t.cert_file, t.key_file, t.client_ca_file, t.require_client_cert, t.reload_check_s
    )
    health_servicer = health.aio.HealthServicer()
    admin = AdminService(router, store, RedisAdmin(store) if isinstance(store, RedisModelStore)
                         else None)  # fmt: skip

    def listener(
        address: str, setting: str, admin_here: bool, router_here: bool
    ) -> tuple[grpc.aio.Server, int]:
        """A server on `address`: every service through the guard (bad bytes are
        INVALID_ARGUMENT, a bug INTERNAL, callers checked), health on each."""
        shared = role is not None and router_here
        server = new_server(settings, reuse_port=shared)
        guard = Guard(server, metrics, authorizer)
        names: list[str] = [health.SERVICE_NAME, reflection.SERVICE_NAME]
        if router_here:
            service = RouterService(router, metrics, pager, server_settings.feedback_batch_max)
            guard.add(
                pb_grpc.add_RouterServicer_to_server,
                service if tracer is None else tracer.router_service(service),
            )
            names.append(SERVICE_NAME)
        if admin_here:
            guard.add(apb_grpc.add_AdminServicer_to_server, admin, audit=ADMIN_SERVICE_NAME)
            names.append(ADMIN_SERVICE_NAME)
        guard.add(health_pb2_grpc.add_HealthServicer_to_server, health_servicer)
        guard.add(  # what enable_server_reflection does for a grpc.aio server, through the guard
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer(names),
        )
        # Credentials of their own per listener: grpc asks a dynamic credential's fetcher for
        # its first certificate once, so a second port on the same object would get none.
        credentials = server_credentials(files) if t.enabled else None
        return server, bind(server, address, credentials, setting, reuse_port=shared)

    admin_address = server_settings.admin_listen
    server, port = listener(server_settings.listen, "server.listen", not admin_address, True)
    extra: dict[str, tuple[grpc.aio.Server, int]] = {}
    if admin_address and (role is None or role.index == 0):
        extra["admin"] = listener(admin_address, "server.admin_listen", True, False)
    if server_settings.health_listen:  # plaintext, health only (kubelet probes speak no TLS)
        probes = new_server(settings, reuse_port=role is not None)
        Guard(probes, metrics).add(health_pb2_grpc.add_HealthServicer_to_server, health_servicer)
        address = server_settings.health_listen
        extra["health"] = (
            probes,
            bind(probes, address, None, "server.health_listen", reuse_port=role is not None),
        )
    return Daemon(
        settings, router, store, metrics, server, health_servicer, port, trace,
        pager=pager, encoders=encoders, listeners=extra, tracing=tracer,
    )  # fmt: skip


def new_server(settings: Settings, reuse_port: bool = False) -> grpc.aio.Server:
    """A grpc.aio server; `reuse_port` (worker processes) lets several processes bind the same
    port, the kernel spreading connections over them. Off, binding a port in use fails."""
    max_bytes = settings.server.max_message_bytes
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )


def bind(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    setting: str = "server.listen",
    reuse_port: bool = False,
) -> int:
    """Listen on `address` (TLS with `credentials`); the port (0 for a Unix socket).
    ListenError, naming `setting`, if it cannot. `reuse_port`: the server was made with
    SO_REUSEPORT (a worker process), so a sibling's listener on the port is no conflict."""
    check_listen(address, setting, reuse_port)
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpc's "Failed to bind to address"; check_listen found no reason
        raise listen_error(address, setting) from None
    if port == 0 and not address.startswith("unix:"):
        raise listen_error(address, setting)
    return port


def log_memory_budget(settings: Settings) -> None:
    """The worst-case memory the bounds allow; a warning if it exceeds the container's limit."""
    parts = settings.memory_estimate()
    total, limit = parts["total"], memory_limit()
    fields = {k: None if v is None else round(v / (1 << 20)) for k, v in parts.items()}
    if total is None or (limit is not None and total > limit):
        log.warning(
            "server.memory_over_limit", limit_mib=limit and round(limit / (1 << 20)),
            worst_case_mib=fields,
            hint="lower store.max_pending / max_tombstones, policies' max_segments or"
            " store.redis.cache_mb, or raise the container's memory limit (docs/deploy.md)",
        )  # fmt: skip
    else:
        log.info("server.memory_budget", worst_case_mib=fields,
                 limit_mib=limit and round(limit / (1 << 20)))  # fmt: skip


def start_metrics(settings: Settings, metrics: Metrics) -> WSGIServer | None:
    """/metrics on server.metrics_listen (TLS with server.metrics_tls) in a daemon thread, or
    None when it is ''. The caller reads the port from `.server_port` (0 binds a free one).
    ListenError if the address cannot be bound."""
    tls = settings.server.tls if settings.server.metrics_tls else None
    try:
        return serve_metrics(
            settings.server.metrics_listen, metrics.registry, tls.cert_file if tls else None,
            tls.key_file if tls else None,
        )  # fmt: skip
    except OSError as exc:
        raise listen_error(settings.server.metrics_listen, "server.metrics_listen", exc) from None


async def serve(
    settings: Settings,
    role: WorkerRole | None = None,
    started: Callable[[CollectorRegistry], None] | None = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT, then shut down gracefully. As worker `role`
    (server/workers.py) it serves no /metrics (the supervisor does: `started` gets the registry
    once the daemon serves) and leaves the memory budget to the supervisor."""
    if role is None:
        log_memory_budget(settings)
    daemon = build_daemon(settings, role=role)
    metrics = start_metrics(settings, daemon.metrics) if role is None else None
    metrics_port = metrics.server_port if metrics is not None else None
    await daemon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon.sweeper = asyncio.create_task(daemon.sweep_forever())
    log.info(
        "server.started", port=daemon.port, metrics_port=metrics_port,
        tls=settings.server.tls.enabled, auth=bool(settings.auth.callers),
        **{f"{name}_port": port for name, (_, port) in daemon.listeners.items()},
        policies=daemon.router.policy_names, store=settings.store.backend,
    )  # fmt: skip
    if not daemon.router.policy_names and not settings.auto_create_policies:
        log.warning("server.no_policies", hint="declare [policies.<name>] in the config file")
    if started is not None:
        started(daemon.metrics.registry)
    await stop.wait()
    log.info(
        "server.stopping", drain_delay_s=settings.server.drain_delay_s,
        grace_s=settings.server.grace_s,
    )  # fmt: skip
    await daemon.stop()
    log.info("server.stopped")
