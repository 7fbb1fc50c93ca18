"""The BanditdError tree, and `shown`: how a message echoes caller input. A leaf module: it
imports nothing from banditd.

Adapters translate library errors into these once; the gRPC edge maps them to status codes
(banditd/server/guard.py). Each docstring says what the caller should do.
"""


class BanditdError(Exception):
    """Root. The gRPC edge catches this and nothing broader."""


class InvalidRequestError(BanditdError):
    """The caller sent something unusable (no candidates, NaN, wrong dimension). Fix the request."""


class UnknownPolicyError(InvalidRequestError):
    """The policy is not declared in the config and policies are not auto-created."""


class ResourceExhaustedError(BanditdError):
    """A configured bound is reached (segments of a policy, auto-created policies, replicas):
    the request would grow state beyond it. The message names the bound and how to raise it."""


class UnauthenticatedError(BanditdError):
    """No credentials, or ones no configured caller has. Present a client certificate or a
    bearer token of a caller in auth.callers."""


class PermissionDeniedError(BanditdError):
    """The caller is known but lacks the role, or the policy is not one of its policies."""


class DecisionNotFoundError(BanditdError):
    """Feedback names a decision this daemon never made (or forgot). Safe to drop."""


class DecisionExpiredError(DecisionNotFoundError):
    """Feedback arrived after the decision's reward wait window; the expiry rule already ran."""


class FailedPreconditionError(BanditdError):
    """The system is not in a state that allows this (e.g. model trained under another pipeline)."""


class UpdateRefusedError(FailedPreconditionError):
    """Applying this reward would make the model non-finite or not positive definite, so it was
    refused and nothing changed (counted in banditd_updates_refused_total). The decision stays
    pending. The model's state is suspect: export it for a look, then reset the segment."""


class StateUnavailableError(BanditdError):
    """The shared store did not answer in time. Retry; feedback retries are idempotent."""


class ConfigError(BanditdError):
    """The configuration is inconsistent. Fix the config file, env or flags."""


class ListenError(ConfigError):
    """A listener cannot bind its address (in use, not this machine's, no permission). Free the
    address or change the setting the message names."""


# -- echoing caller input ----------------------------------------------------------------------
# A message or log line that copies what the caller sent must stay small whatever was sent: a
# 900 KB policy name echoed whole makes the status metadata too big for the client (which then
# sees RESOURCE_EXHAUSTED instead of the real error) and writes a 1.8 MB log line.
ECHO_CHARS = 200  # of one echoed value, in a message
LOG_VALUE_CHARS = 1000  # of one string in a log line (it may be a whole message)


def shown(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as a message should echo it: `ascii(value)` (a repr with non-ASCII escaped),
    cut after about `limit` characters and then marked `... [N characters]`, N the length of the
    whole value (of its repr if it is neither str nor bytes). Pure; cheap on huge strings."""
    if isinstance(value, str | bytes):
        text = ascii(value[:limit])
        if len(value) <= limit and len(text) <= limit + 3:  # + quotes and a b prefix
            return text
        return f"{text[: limit + 3]}... [{len(value):,} characters]"
    text = ascii(value)
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text):,} characters]"


def clipped(text: str, limit: int) -> str:
    """`text` itself, or its first `limit` characters and `... [N characters]` (a whole status
    message or log value, already built: no quotes added)."""
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text):,} characters]"
