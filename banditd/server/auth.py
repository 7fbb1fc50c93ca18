"""Who is calling, and may they (docs/security.md)?

A caller proves who it is with an mTLS client certificate (its SPIFFE id or other URI SAN, or
its subject's common name, as `CN=<name>`) or a bearer token (metadata `authorization: Bearer
<token>`; the config holds only SHA-256 hashes, several per caller for rotation). Each caller
has roles (`route`, `feedback`, `admin`) on a set of policies (`*` = all). The guard asks
`Authorizer.check` before any handler runs, so a refused call never touches a model:

- no credentials, or ones no caller has: UNAUTHENTICATED;
- a role the caller lacks, or a policy outside its set: PERMISSION_DENIED. The answer is the
  same whether the policy exists or not, so a tenant cannot learn the names of others';
  `ListPolicies` lists only the caller's policies.

A Feedback's policy is the one its decision id names, so a decision id cannot be used across
tenants. With no callers configured, auth is off and every call is allowed on its listener.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditd.errors import (
    ConfigError,
    PermissionDeniedError,
    UnauthenticatedError,
    shown,
)

ROUTER = "/banditd.v1.Router/"
ADMIN = "/banditd.v1.Admin/"
ALL = "*"

# The role each RPC needs. Health is open (probes); reflection needs any known caller.
ROLES: Mapping[str, str] = {
    ROUTER + "Route": "route",
    ROUTER + "Feedback": "feedback",
    ROUTER + "FeedbackBatch": "feedback",
    ROUTER + "ReportResidency": "route",
    ROUTER + "GetPagingPlan": "route",
    **{ADMIN + m: "admin" for m in (
        "ListPolicies", "ListArms", "AddArm", "RemoveArm", "ResetPolicy", "ExportPolicy",
        "ImportPolicy", "ListSegments", "DeleteSegment",
    )},
}  # fmt: skip
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    roles: frozenset[str]
    policies: frozenset[str]  # ALL in it: every policy

    def may_use(self, policy: str) -> bool:
        return ALL in self.policies or policy in self.policies


# The caller of the RPC being served (set by the guard; AdminService reads it).
CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_tokens_file(path: str) -> dict[str, list[str]]:
    """`<caller name> <sha256 hex>` per line ('#' comments): hashes by caller."""
    out: dict[str, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"auth.tokens_file: cannot read {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) != 64:
            raise ConfigError(f"auth.tokens_file {path}:{n}: expected '<caller> <sha256 hex>'")
        out.setdefault(parts[0], []).append(parts[1].lower())
    return out


def policies_of(method: str, request: Any) -> Iterable[str]:
    """The policies a request touches (none for replica- and server-wide calls)."""
    if method == ROUTER + "Route":
        return (request.policy,)
    if method == ROUTER + "Feedback":
        return (request.decision_id.rpartition(":")[0],)
    if method == ROUTER + "FeedbackBatch":
        return {item.decision_id.rpartition(":")[0] for item in request.items}
    if method == ADMIN + "ImportPolicy":
        return (request.policy or request.state.policy,)
    if method.startswith(ADMIN) and method != ADMIN + "ListPolicies":
        return (request.policy,)
    return ()


class Authorizer:
    """Callers by identity and by token hash; `check` answers for one RPC."""

    def __init__(
        self,
        callers: Sequence[Caller],
        identities: Mapping[str, str],
        token_hashes: Mapping[str, str],
    ) -> None:
        self._callers = {c.name: c for c in callers}
        self._by_identity = dict(identities)  # identity -> caller name
        self._by_token = dict(token_hashes)  # sha256 hex -> caller name
        self.enabled = bool(callers)

    @classmethod
    def from_config(
        cls,
        callers: Sequence[tuple[str, Sequence[str], Sequence[str], Sequence[str], Sequence[str]]],
        tokens_file: str = "",
    ) -> Authorizer:
        """From (name, identities, token hashes, roles, policies) rows and a tokens file."""
        extra = read_tokens_file(tokens_file) if tokens_file else {}
        unknown = sorted(set(extra) - {name for name, *_ in callers})
        if unknown:
            raise ConfigError(f"auth.tokens_file names callers not in auth.callers: {unknown}")
        built: list[Caller] = []
        identities: dict[str, str] = {}
        tokens: dict[str, str] = {}
        for name, ids, hashes, roles, policies in callers:
            built.append(Caller(name, frozenset(roles), frozenset(policies)))
            for identity in ids:
                if identities.setdefault(identity, name) != name:
                    raise ConfigError(f"auth: identity {identity!r} belongs to two callers")
            for digest in [*hashes, *extra.get(name, ())]:
                if tokens.setdefault(digest, name) != name:
                    raise ConfigError("auth: one token hash belongs to two callers")
        return cls(built, identities, tokens)

    def identify(self, context: Any) -> Caller:
        """The caller behind this call's credentials, else UnauthenticatedError."""
        token = _bearer(context.invocation_metadata())
        if token is not None:
            name = self._by_token.get(token_hash(token))
            if name is None:
                raise UnauthenticatedError("the bearer token is not one of a configured caller")
            return self._callers[name]
        presented = _peer_identities(context.auth_context())
        for identity in presented:
            name = self._by_identity.get(identity)
            if name is not None:
                return self._callers[name]
        if presented:
            raise UnauthenticatedError(
                f"the client certificate ({shown(sorted(presented)[:3])}) is not a configured"
                " caller's identity"
            )
        raise UnauthenticatedError(
            "no credentials: present a client certificate (mTLS) or send metadata"
            " 'authorization: Bearer <token>'"
        )

    def check(self, method: str, request: Any, context: Any) -> Caller | None:
        """The caller, if it may make this call; UnauthenticatedError or
        PermissionDeniedError if not; None when auth is off (or for open services)."""
        if not self.enabled or method.startswith(OPEN_SERVICES):
            return None
        caller = self.identify(context)
        CALLER.set(caller)  # known from here on, refused or not (the audit line names it)
        role = ROLES.get(method)
        if role is not None and role not in caller.roles:
            raise PermissionDeniedError(
                f"caller {caller.name!r} lacks role {role!r} for {method.rsplit('/', 1)[-1]}"
            )
        if role is not None and request is not None:
            for policy in policies_of(method, request):
                if not caller.may_use(policy):
                    raise PermissionDeniedError(
                        f"caller {caller.name!r} may not use policy {shown(policy)} (it may"
                        " not exist, or belong to another caller)"
                    )
        return caller


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise UnauthenticatedError("metadata 'authorization' must be 'Bearer <token>'")
    return None


def _peer_identities(auth_context: Mapping[str, Sequence[bytes]]) -> set[str]:
    """What a verified client certificate says: SPIFFE id and URI SANs, and CN=<common name>."""
    out: set[str] = set()
    for key in ("peer_spiffe_id", "peer_uri"):
        out.update(v.decode(errors="replace") for v in auth_context.get(key, ()))
    for cn in auth_context.get("x509_common_name", ()):
        out.add("CN=" + cn.decode(errors="replace"))
    return out
