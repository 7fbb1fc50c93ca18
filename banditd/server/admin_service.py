"""AdminService: the banditd.v1.Admin gRPC service (protobuf <-> router and store admin).

Input is checked here, before it reaches the router or the store (where a policy name becomes a
Redis key): anything malformed is INVALID_ARGUMENT, echoed through `shown`.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
import structlog

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.config import POLICY_NAME
from banditd.errors import BanditdError, FailedPreconditionError, InvalidRequestError, shown
from banditd.router import ARM_ID, SEGMENT, Router
from banditd.server.guard import abort_with
from banditd.server.request_log import request_fields
from banditd.state import codec
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_admin import ModelMeta, PolicyExport, RedisAdmin
from banditd.types import ModelStore

log = structlog.get_logger("banditd.admin")

Ctx = grpc.aio.ServicerContext[Any, Any]


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


def from_proto(msg: apb.PolicyState, dim: int) -> PolicyExport:
    """The export in `msg`, checked against a policy whose model has dimension `dim`."""
    arms = []
    seen = set()
    for a in msg.arms:
        arm = shown(a.arm_id)
        if not ARM_ID.fullmatch(a.arm_id):
            raise InvalidRequestError(f"arm id {arm} must be 1-128 printable non-space characters")
        _check_segment(a.segment)
        if (a.segment, a.arm_id) in seen:
            raise InvalidRequestError(f"arm {arm} of segment {shown(a.segment)} appears twice")
        seen.add((a.segment, a.arm_id))
        if len(a.b) != dim or len(a.s_upper) != codec.triangle_size(dim):
            raise InvalidRequestError(
                f"arm {arm}: the policy's model has dimension {dim}, so b needs {dim} values and"
                f" s_upper {codec.triangle_size(dim)}; got {len(a.b)} and {len(a.s_upper)}"
            )
        b, upper = np.array(a.b, dtype=np.float64), np.array(a.s_upper, dtype=np.float64)
        if not (np.isfinite(b).all() and np.isfinite(upper).all()):
            raise InvalidRequestError(f"arm {arm}: b and s_upper must be finite")
        s = np.zeros((dim, dim))
        rows, cols = np.triu_indices(dim)
        s[rows, cols] = upper
        s[cols, rows] = upper
        arms.append((a.segment, a.arm_id, codec.ArmSums(s, b, a.n, a.decay_epoch)))
    for m in msg.models:
        _check_segment(m.segment)
    models = [ModelMeta(m.segment, m.fingerprint, m.version) for m in msg.models]
    return PolicyExport(msg.policy, models, arms)


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
        return apb.ListPoliciesResponse(policies=[
            apb.PolicyInfo(name=n, declared=n in declared, stored=n in stored)
            for n in sorted(declared | stored)
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
            self._router.arms(checked_policy(policy))  # unknown policies are refused, as Route
            dim = self._router.specs()[policy].dim
            arms = await admin.import_(
                policy, from_proto(request.state, dim), request.replace, time.time()
            )
        except BanditdError as exc:
            await abort_with(context, exc)
        log.info(
            "admin.policy_imported", **request_fields(context, "ImportPolicy"), policy=policy,
            arms=arms, replace=request.replace,
        )  # fmt: skip
        return apb.ImportPolicyResponse(arms=arms)
