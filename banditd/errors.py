"""The BanditdError tree. A leaf module: it imports nothing from banditd.

Adapters translate library errors into these once; the gRPC edge maps them to status codes
(banditd/server/service.py). Each docstring says what the caller should do.
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


SHOWN_CHARS = 200  # longest echo of a caller's value in a message or log line


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` for a message, cut to `limit` characters with the original length noted.

    Every value a caller sent that an error message or log line echoes goes through this, so a
    900 KB policy name cannot turn into a 900 KB status message or log line.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"
