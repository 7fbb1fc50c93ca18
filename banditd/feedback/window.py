"""WindowWatch: is a policy's reward window (reward_wait_s) too short for its rewards? PURE.

A reward that arrives after its decision's window is refused (the expiry rule already ran), and
a decision whose reward never comes in time is settled with the default reward or dropped. If
rewards routinely come later than the window, the policy silently learns the default reward
instead of the real one. The Router tells this watch how each decision ended and how late
each late reward was; the daemon asks it for warnings once per sweep and logs them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

LATE_EVERY_S = 60.0  # at most one late-rewards line per policy per this
SHORT_EVERY_S = 600.0  # at most one window-too-short line per policy per this
ENDINGS = 1000  # the expired share is taken over this many latest endings
TOO_SHORT = 0.5  # warn when at least this share of them expired while late rewards came


@dataclass(frozen=True, slots=True)
class WindowWarning:
    """late: rewards refused as late since the last warning of this kind; max_late_by_s: the
    latest of them (of all, for window_too_short); expired_share: of the latest endings;
    suggested_s: a window that would have taken every late reward seen."""

    policy: str
    kind: str  # "late_rewards" | "window_too_short"
    window_s: float
    late: int
    max_late_by_s: float
    expired_share: float
    suggested_s: float


@dataclass(slots=True)
class _Policy:
    endings: deque[bool] = field(default_factory=lambda: deque(maxlen=ENDINGS))  # expired?
    late_total: int = 0
    expired_total: int = 0
    late_since: int = 0  # late rewards since the last late_rewards warning
    max_late_since: float = 0.0
    late_unreported: int = 0  # late rewards since the last window_too_short warning
    max_late: float = 0.0  # over the whole run (for the suggestion)
    late_warned_at: float = -math.inf
    short_warned_at: float = -math.inf


class WindowWatch:
    """Counts per policy (each replica sees its own feedback and its own sweeps)."""

    def __init__(self) -> None:
        self._policies: dict[str, _Policy] = {}

    def _get(self, policy: str) -> _Policy:
        p = self._policies.get(policy)
        if p is None:
            p = self._policies[policy] = _Policy()
        return p

    def ended(self, policy: str, expired: bool, late_by_s: float | None = None) -> None:
        """A decision ended: by its reward (expired False), or by the expiry rule; late_by_s:
        its reward came this long after the window closed (and was refused)."""
        p = self._get(policy)
        p.endings.append(expired)
        p.expired_total += expired
        if late_by_s is not None:
            self.late(policy, late_by_s)

    def late(self, policy: str, late_by_s: float) -> None:
        """A reward was refused because it came `late_by_s` after its window closed."""
        p = self._get(policy)
        p.late_total += 1
        p.late_since += 1
        p.late_unreported += 1
        p.max_late_since = max(p.max_late_since, late_by_s)
        p.max_late = max(p.max_late, late_by_s)

    def late_counts(self) -> dict[str, int]:
        return {name: p.late_total for name, p in self._policies.items() if p.late_total}

    def expired_counts(self) -> dict[str, int]:
        return {name: p.expired_total for name, p in self._policies.items() if p.expired_total}

    def warnings(self, now: float, windows: Mapping[str, float]) -> list[WindowWarning]:
        """What to warn about now (each kind rate-limited per policy); `windows`: each policy's
        reward_wait_s."""
        out = []
        for name, p in self._policies.items():
            window = windows.get(name)
            if window is None:
                continue
            suggested = _round_up(window + p.max_late)
            share = sum(p.endings) / len(p.endings) if p.endings else 0.0
            if p.late_since and now - p.late_warned_at >= LATE_EVERY_S:
                out.append(WindowWarning(name, "late_rewards", window, p.late_since,
                                         p.max_late_since, share, suggested))  # fmt: skip
                p.late_since, p.max_late_since, p.late_warned_at = 0, 0.0, now
            if (
                p.late_unreported
                and len(p.endings) >= ENDINGS // 10
                and share >= TOO_SHORT
                and now - p.short_warned_at >= SHORT_EVERY_S
            ):
                out.append(WindowWarning(name, "window_too_short", window, p.late_unreported,
                                         p.max_late, share, suggested))  # fmt: skip
                p.late_unreported, p.short_warned_at = 0, now
        return out


def _round_up(seconds: float) -> float:
    """A readable window: up to the next minute, or the next hour past an hour."""
    step = 3600.0 if seconds > 3600 else 60.0
    return math.ceil(seconds / step) * step
