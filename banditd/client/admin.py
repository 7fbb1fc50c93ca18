"""Clients of the Admin service (admin.proto): policies, arms, reset, export/import, segments.

The daemon serves Admin on its own loopback listener by default (`server.admin_listen`,
127.0.0.1:50053); with admin_listen = "" it is on `server.listen`, for callers with role admin.
Nothing here is retried: AddArm, ResetPolicy and ImportPolicy change state.
"""

from __future__ import annotations

from typing import Unpack

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.client.results import Arms, PolicyInfo, Segments
from banditd.client.transport import Connection, ConnectOptions, MetadataLike

ADMIN_TARGET = "127.0.0.1:50053"


class _AdminConnection(Connection):
    def __init__(
        self, target: str, timeout_s: float, *, aio: bool, **connect: Unpack[ConnectOptions]
    ) -> None:
        super().__init__(target, timeout_s, aio=aio, **connect)
        self._stub = apb_grpc.AdminStub(self._channel)  # type: ignore[no-untyped-call]


class AdminClient(_AdminConnection):
    """Blocking Admin client; options as `Client`'s (no retry policy). Every method also takes
    `metadata` and `timeout_s` for that call."""

    def __init__(
        self,
        target: str = ADMIN_TARGET,
        timeout_s: float = 10.0,
        **connect: Unpack[ConnectOptions],
    ) -> None:
        super().__init__(target, timeout_s, aio=False, **connect)

    def list_policies(
        self, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> tuple[PolicyInfo, ...]:
        """Policies declared in the config or with state in the store (a caller sees its own)."""
        r = self._stub.ListPolicies(apb.ListPoliciesRequest(), **self._call(metadata, timeout_s))
        return tuple(PolicyInfo(p.name, p.declared, p.stored) for p in r.policies)

    def list_arms(
        self, policy: str, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> Arms:
        request = apb.ListArmsRequest(policy=policy)
        return Arms.from_proto(self._stub.ListArms(request, **self._call(metadata, timeout_s)))

    def add_arm(
        self,
        policy: str,
        arm_id: str,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> Arms:
        """Make an arm routable now, on every replica; the policy's arms after."""
        request = apb.ArmRequest(policy=policy, arm_id=arm_id)
        return Arms.from_proto(self._stub.AddArm(request, **self._call(metadata, timeout_s)))

    def remove_arm(
        self,
        policy: str,
        arm_id: str,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> Arms:
        """Stop routing to an arm (its learned state is kept); the policy's arms after."""
        request = apb.ArmRequest(policy=policy, arm_id=arm_id)
        return Arms.from_proto(self._stub.RemoveArm(request, **self._call(metadata, timeout_s)))

    def reset_policy(
        self, policy: str, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> int:
        """Forget what a policy learned; the number of (policy, segment) models forgotten."""
        request = apb.ResetPolicyRequest(policy=policy)
        return int(self._stub.ResetPolicy(request, **self._call(metadata, timeout_s)).models)

    def export_policy(
        self, policy: str, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> apb.PolicyState:
        """A policy's learned state (Redis backend), as import_policy takes it back."""
        request = apb.ExportPolicyRequest(policy=policy)
        state: apb.PolicyState = self._stub.ExportPolicy(request, **self._call(metadata, timeout_s))
        return state

    def import_policy(
        self,
        state: apb.PolicyState,
        policy: str = "",
        *,
        replace: bool = False,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Load an exported state (under `policy`, default its own name), all or nothing;
        replace resets the policy first. The number of arms imported."""
        request = apb.ImportPolicyRequest(policy=policy, state=state, replace=replace)
        return int(self._stub.ImportPolicy(request, **self._call(metadata, timeout_s)).arms)

    def list_segments(
        self,
        policy: str,
        offset: int = 0,
        limit: int = 0,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> Segments:
        """A page of the policy's segments, most recently used first (limit 0 = 1000)."""
        request = apb.ListSegmentsRequest(policy=policy, offset=offset, limit=limit)
        kw = self._call(metadata, timeout_s)
        return Segments.from_proto(self._stub.ListSegments(request, **kw))

    def delete_segment(
        self,
        policy: str,
        segment: str,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """Forget what one segment learned; False when it had no state."""
        request = apb.DeleteSegmentRequest(policy=policy, segment=segment)
        return bool(self._stub.DeleteSegment(request, **self._call(metadata, timeout_s)).deleted)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAdminClient(_AdminConnection):
    """asyncio Admin client; create and use it inside one event loop. As `AdminClient`."""

    def __init__(
        self,
        target: str = ADMIN_TARGET,
        timeout_s: float = 10.0,
        **connect: Unpack[ConnectOptions],
    ) -> None:
        super().__init__(target, timeout_s, aio=True, **connect)

    async def list_policies(
        self, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> tuple[PolicyInfo, ...]:
        request = apb.ListPoliciesRequest()
        r = await self._stub.ListPolicies(request, **self._call(metadata, timeout_s))
        return tuple(PolicyInfo(p.name, p.declared, p.stored) for p in r.policies)

    async def list_arms(
        self, policy: str, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> Arms:
        request = apb.ListArmsRequest(policy=policy)
        return Arms.from_proto(
            await self._stub.ListArms(request, **self._call(metadata, timeout_s))
        )

    async def add_arm(
        self,
        policy: str,
        arm_id: str,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> Arms:
        request = apb.ArmRequest(policy=policy, arm_id=arm_id)
        return Arms.from_proto(await self._stub.AddArm(request, **self._call(metadata, timeout_s)))

    async def remove_arm(
        self,
        policy: str,
        arm_id: str,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> Arms:
        request = apb.ArmRequest(policy=policy, arm_id=arm_id)
        kw = self._call(metadata, timeout_s)
        return Arms.from_proto(await self._stub.RemoveArm(request, **kw))

    async def reset_policy(
        self, policy: str, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> int:
        request = apb.ResetPolicyRequest(policy=policy)
        kw = self._call(metadata, timeout_s)
        return int((await self._stub.ResetPolicy(request, **kw)).models)

    async def export_policy(
        self, policy: str, *, metadata: MetadataLike | None = None, timeout_s: float | None = None
    ) -> apb.PolicyState:
        request = apb.ExportPolicyRequest(policy=policy)
        kw = self._call(metadata, timeout_s)
        state: apb.PolicyState = await self._stub.ExportPolicy(request, **kw)
        return state

    async def import_policy(
        self,
        state: apb.PolicyState,
        policy: str = "",
        *,
        replace: bool = False,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> int:
        request = apb.ImportPolicyRequest(policy=policy, state=state, replace=replace)
        kw = self._call(metadata, timeout_s)
        return int((await self._stub.ImportPolicy(request, **kw)).arms)

    async def list_segments(
        self,
        policy: str,
        offset: int = 0,
        limit: int = 0,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> Segments:
        request = apb.ListSegmentsRequest(policy=policy, offset=offset, limit=limit)
        kw = self._call(metadata, timeout_s)
        return Segments.from_proto(await self._stub.ListSegments(request, **kw))

    async def delete_segment(
        self,
        policy: str,
        segment: str,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        request = apb.DeleteSegmentRequest(policy=policy, segment=segment)
        kw = self._call(metadata, timeout_s)
        return bool((await self._stub.DeleteSegment(request, **kw)).deleted)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
