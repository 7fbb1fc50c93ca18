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


class DecisionNotFoundError(BanditdError):
    """Feedback names a decision this daemon never made (or forgot). Safe to drop."""


class DecisionExpiredError(DecisionNotFoundError):
    """Feedback arrived after the decision's reward wait window; the expiry rule already ran."""


class FailedPreconditionError(BanditdError):
    """The system is not in a state that allows this (e.g. model trained under another pipeline)."""


class StateUnavailableError(BanditdError):
    """The shared store did not answer in time. Retry; feedback retries are idempotent."""


class ConfigError(BanditdError):
    """The configuration is inconsistent. Fix the config file, env or flags."""
