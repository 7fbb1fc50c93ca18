"""AdminService: the banditd.v1.Admin gRPC service (protobuf <-> router and store admin).

Input is checked here, before it reaches the router or the store (where a policy name becomes a
Redis key): anything malformed is INVALID_ARGUMENT, echoed through `shown`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import structlog

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.errors import (
    BanditdError,
    FailedPreconditionError,
    InvalidRequestError,
    ResourceExhaustedError,
    shown,
)
from banditd.policies import linear
from banditd.router import ARM_ID, SEGMENT, SHARED_ARM, Router
from banditd.server.auth import CALLER
from banditd.server.guard import abort_with
from banditd.server.request_log import request_fields
from banditd.state import codec
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_admin import ModelMeta, PolicyExport, RedisAdmin
from banditd.types import POLICY_NAME, ModelSpec, ModelStore

log = structlog.get_logger("banditd.admin")

Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_LIST = 10_000  # segments in one ListSegments page


def to_proto(state: PolicyExport) -> apb.PolicyState:
    rows, cols = None, None
    arms = []
    for segment, arm, sums in state.arms:
        rows, cols = np.triu_indices(sums.dim)
        arms.append(apb.ArmSums(
            segment=segment, arm_id=arm, n=sums.n, b=sums.b.tolist(),
            s_upper=sums.s[rows, cols].tolist(), decay_epoch=sums.epoch,
        ))  # fmt: skip
    models = [apb.ModelState(segment=m.segment, fingerprint=m.fingerprint, version=m.version)
              for m in state.models]  # fmt: skip
    return apb.PolicyState(policy=state.policy, models=models, arms=arms)


def checked_policy(name: str) -> str:
    """`name` if it can name a policy (and so a Redis key), else InvalidRequestError."""
    if not POLICY_NAME.fullmatch(name):
        raise InvalidRequestError(f"policy name {shown(name)} must match {POLICY_NAME.pattern}")
    return name


def _check_segment(segment: str) -> None:
    if not SEGMENT.fullmatch(segment):
        raise InvalidRequestError(
            f"segment {shown(segment)} must be at most 128 printable non-space characters"
        )


MAX_EXACT = 2**53  # counts and versions are stored as float64 (codec) or Lua numbers


@dataclass(frozen=True, slots=True)
class ImportRules:
    """What an imported state must satisfy to be a state of this policy."""

    spec: ModelSpec
    arms: frozenset[str] | None  # the arms it may hold (None: any well-formed id)
    shared: bool  # one shared model: its single state is stored under SHARED_ARM


def from_proto(msg: apb.PolicyState, rules: ImportRules) -> PolicyExport:
    """The export in `msg`, checked like Route input against the policy it is imported into:
    every arm's dimension, finite values, S symmetric positive semidefinite (so λI + S has a
    Cholesky factor), counts in range, declared arms, well-formed unique segments each with its
    model entry, and the pipeline fingerprint. Raises before anything is written."""
    spec = rules.spec
    dim = spec.dim
    models: dict[str, ModelMeta] = {}
    for m in msg.models:
        _check_segment(m.segment)
        if m.segment in models:
            raise InvalidRequestError(f"segment {shown(m.segment)} has two model entries")
        if m.fingerprint != spec.fingerprint:
            raise FailedPreconditionError(
                f"segment {shown(m.segment)} was trained under feature pipeline"
                f" {shown(m.fingerprint)} but this policy builds {spec.fingerprint!r}: its"
                " statistics mean something else here (import it into a policy with that"
                " pipeline, or restore the pipeline)"
            )
        if m.version >= MAX_EXACT:
            raise InvalidRequestError(f"segment {shown(m.segment)}: version must be < 2^53")
        models[m.segment] = ModelMeta(m.segment, m.fingerprint, m.version)
    arms = []
    seen = set()
    for a in msg.arms:
        arm = shown(a.arm_id)
        if rules.shared:
            if a.arm_id != SHARED_ARM:
                raise InvalidRequestError(
                    f"arm {arm}: this policy has one shared model, stored as arm '{SHARED_ARM}'"
                )
        elif not ARM_ID.fullmatch(a.arm_id):
            raise InvalidRequestError(f"arm id {arm} must be 1-128 printable non-space characters")
        elif rules.arms is not None and a.arm_id not in rules.arms:
            raise InvalidRequestError(
                f"arm {arm} is not an arm of this policy (declared: {shown(sorted(rules.arms))});"
                " add it first (Admin AddArm) or set allow_new_arms"
            )
        _check_segment(a.segment)
        if (a.segment, a.arm_id) in seen:
            raise InvalidRequestError(f"arm {arm} of segment {shown(a.segment)} appears twice")
        seen.add((a.segment, a.arm_id))
        if len(a.b) != dim or len(a.s_upper) != codec.triangle_size(dim):
            raise InvalidRequestError(
                f"arm {arm}: the policy's model has dimension {dim}, so b needs {dim} values and"
                f" s_upper {codec.triangle_size(dim)}; got {len(a.b)} and {len(a.s_upper)}"
            )
        if a.n >= MAX_EXACT or not -1 <= a.decay_epoch < MAX_EXACT:
            raise InvalidRequestError(f"arm {arm}: n must be < 2^53 and decay_epoch >= -1")
        b, upper = np.array(a.b, dtype=np.float64), np.array(a.s_upper, dtype=np.float64)
        if not (np.isfinite(b).all() and np.isfinite(upper).all()):
            raise InvalidRequestError(f"arm {arm}: b and s_upper must be finite")
        s = np.zeros((dim, dim))
        rows, cols = np.triu_indices(dim)
        s[rows, cols] = upper
        s[cols, rows] = upper
        _check_psd(arm, s, b, a.n, spec.l2)
        arms.append((a.segment, a.arm_id, codec.ArmSums(s, b, a.n, a.decay_epoch)))
    for segment, arm_id, _ in arms:
        if segment not in models:
            raise InvalidRequestError(
                f"arm {shown(arm_id)} is in segment {shown(segment)}, which has no model entry"
                " (its fingerprint and version)"
            )
    return PolicyExport(msg.policy, list(models.values()), arms)


def _check_psd(arm: str, s: np.ndarray, b: np.ndarray, n: int, l2: float) -> None:
    """S = Σ x xᵀ is positive semidefinite; rounding may leave eigenvalues a hair below 0."""
    scale = max(1.0, float(np.abs(s).max(initial=0.0)))
    with np.errstate(all="ignore"):  # huge finite values: refused below, not warned about
        smallest = float(np.linalg.eigvalsh(s).min()) if s.size else 0.0
        if not smallest >= -1e-9 * scale:
            raise InvalidRequestError(
                f"arm {arm}: S is not positive semidefinite (eigenvalue {smallest:g}), so it is"
                " not a sum of x xᵀ"
            )
        try:
            linear.from_sums(s, b, n, l2)
        except linear.UnsafeUpdateError as exc:
            raise InvalidRequestError(f"arm {arm}: its statistics are unusable ({exc})") from None


class AdminService(apb_grpc.AdminServicer):
    """Policies, arms, reset, export/import. Export/import need the Redis backend."""

    def __init__(self, router: Router, store: ModelStore, admin: RedisAdmin | None) -> None:
        self._router = router
        self._store = store
        self._admin = admin

    def _redis(self, what: str) -> RedisAdmin:
        if self._admin is None:
            raise FailedPreconditionError(f"{what} needs store.backend = 'redis'")
        return self._admin

    async def ListPolicies(self, request: apb.ListPoliciesRequest, context: Ctx) -> Any:
        try:
            declared = set(self._router.policy_names)
            if self._admin is not None:
                stored = set(await self._admin.policies())
            elif isinstance(self._store, InMemoryModelStore):
                stored = {key.policy for key in self._store.models()}
            else:
                stored = set()
        except BanditdError as exc:
            await abort_with(context, exc)
        caller = CALLER.get()  # a caller sees only its own policies (docs/security.md)
        visible = [n for n in sorted(declared | stored) if caller is None or caller.may_use(n)]
        return apb.ListPoliciesResponse(policies=[
            apb.PolicyInfo(name=n, declared=n in declared, stored=n in stored) for n in visible
        ])  # fmt: skip

    async def _arms(self, policy: str) -> apb.ListArmsResponse:
        learned = []
        if self._admin is not None:
            state = await self._admin.export(policy)
            learned = [apb.LearnedArm(segment=seg, arm_id=arm, pulls=s.n)
                       for seg, arm, s in state.arms]  # fmt: skip
        elif isinstance(self._store, InMemoryModelStore):
            for key, states in sorted(self._store.models().items(), key=lambda kv: kv[0].segment):
                if key.policy == policy:
                    learned += [apb.LearnedArm(segment=key.segment, arm_id=arm, pulls=st.n)
                                for arm, st in sorted(states.items())]  # fmt: skip
        return apb.ListArmsResponse(policy=policy, arms=self._router.arms(policy), learned=learned)

    async def ListArms(self, request: apb.ListArmsRequest, context: Ctx) -> Any:
        try:
            return await self._arms(checked_policy(request.policy))
        except BanditdError as exc:
            await abort_with(context, exc)

    async def _change_arm(self, request: apb.ArmRequest, context: Ctx, add: bool) -> Any:
        try:
            arms = set(self._router.arms(checked_policy(request.policy)))
            if add:
                arms.add(request.arm_id)
            else:
                arms.discard(request.arm_id)
                if not arms:
                    raise InvalidRequestError(
                        f"{shown(request.arm_id)} is the last arm of {request.policy!r}; add"
                        " another first (a policy needs at least one arm)"
                    )
            self._router.set_arms(request.policy, sorted(arms))
            if self._admin is not None:
                await self._admin.set_arm_list(request.policy, sorted(arms))
            log.info(
                "admin.arms_changed", **request_fields(context, "AddArm" if add else "RemoveArm"),
                policy=request.policy, arm=request.arm_id, added=add,
            )  # fmt: skip
            return await self._arms(request.policy)
        except BanditdError as exc:
            await abort_with(context, exc)

    async def AddArm(self, request: apb.ArmRequest, context: Ctx) -> Any:
        return await self._change_arm(request, context, add=True)

    async def RemoveArm(self, request: apb.ArmRequest, context: Ctx) -> Any:
        return await self._change_arm(request, context, add=False)

    async def ResetPolicy(self, request: apb.ResetPolicyRequest, context: Ctx) -> Any:
        try:
            checked_policy(request.policy)
            if self._admin is not None:
                models = await self._admin.reset(request.policy)
            elif isinstance(self._store, InMemoryModelStore):
                models = self._store.reset(request.policy)
            else:
                raise FailedPreconditionError("this store cannot be reset")
        except BanditdError as exc:
            await abort_with(context, exc)
        log.info(
            "admin.policy_reset", **request_fields(context, "ResetPolicy"), policy=request.policy,
            models=models,
        )  # fmt: skip
        return apb.ResetPolicyResponse(models=models)

    async def ExportPolicy(self, request: apb.ExportPolicyRequest, context: Ctx) -> Any:
        try:
            return to_proto(await self._redis("export").export(checked_policy(request.policy)))
        except BanditdError as exc:
            await abort_with(context, exc)

    async def ImportPolicy(self, request: apb.ImportPolicyRequest, context: Ctx) -> Any:
        policy = request.policy or request.state.policy
        try:
            admin = self._redis("import")
            declared = self._router.arms(checked_policy(policy))  # unknown policies refused
            config = self._router.policy(policy)
            rules = ImportRules(
                self._router.specs()[policy],
                None if config.allow_new_arms else frozenset(declared),
                config.model == "shared",
            )
            state = from_proto(request.state, rules)
            await self._check_segment_limit(policy, state, request.replace, rules.spec)
            arms = await admin.import_(policy, state, request.replace, time.time())
        except BanditdError as exc:
            await abort_with(context, exc)
        log.info(
            "admin.policy_imported", **request_fields(context, "ImportPolicy"), policy=policy,
            arms=arms, replace=request.replace,
        )  # fmt: skip
        return apb.ImportPolicyResponse(arms=arms)

    async def _check_segment_limit(
        self, policy: str, state: PolicyExport, replace: bool, spec: ModelSpec
    ) -> None:
        """An import may not take a policy over its max_segments."""
        if not spec.max_segments:
            return
        segments = {m.segment for m in state.models}
        if not replace:
            segments |= {info.segment for info in await self._store.segments(policy)}
        if len(segments) > spec.max_segments:
            raise ResourceExhaustedError(
                f"the import would give policy {policy!r} {len(segments)} segments; its limit is"
                f" {spec.max_segments} (max_segments): import with replace, delete segments"
                " first, or raise the limit"
            )

    async def ListSegments(self, request: apb.ListSegmentsRequest, context: Ctx) -> Any:
        try:
            policy = checked_policy(request.policy)
            limit = request.limit or 1000
            if limit > MAX_LIST:
                raise InvalidRequestError(f"limit must be at most {MAX_LIST}")
            segments = await self._store.segments(policy)
        except BanditdError as exc:
            await abort_with(context, exc)
        page = segments[request.offset : request.offset + limit]
        return apb.ListSegmentsResponse(
            policy=policy, total=len(segments),
            segments=[apb.SegmentInfo(segment=i.segment, last_used_unix_s=i.last_used,
                                      arms=i.arms, version=i.version) for i in page],
        )  # fmt: skip

    async def DeleteSegment(self, request: apb.DeleteSegmentRequest, context: Ctx) -> Any:
        try:
            policy = checked_policy(request.policy)
            _check_segment(request.segment)
            deleted = await self._store.delete_segment(policy, request.segment)
        except BanditdError as exc:
            await abort_with(context, exc)
        log.info(
            "admin.segment_deleted", **request_fields(context, "DeleteSegment"), policy=policy,
            segment=request.segment, deleted=deleted,
        )  # fmt: skip
        return apb.DeleteSegmentResponse(deleted=deleted)
