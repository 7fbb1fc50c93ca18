"""WindowWatch: when to say a policy's reward window is too short."""

from __future__ import annotations

from banditd.feedback.window import WindowWatch


def test_a_few_late_rewards_are_reported_but_do_not_call_the_window_too_short() -> None:
    """5% of decisions expire and a few rewards come late: one late_rewards line only."""
    watch = WindowWatch()
    for i in range(1000):
        watch.ended("p", expired=i % 20 == 0)
    for _ in range(3):
        watch.late("p", 12.5)
    kinds = [w.kind for w in watch.warnings(0.0, {"p": 600.0})]
    assert kinds == ["late_rewards"]
    assert watch.warnings(30.0, {"p": 600.0}) == []  # nothing new, and rate-limited


def test_mostly_expired_with_late_rewards_suggests_a_longer_window() -> None:
    """Half the endings expired while rewards came up to 3,200 s late: window_too_short, and
    the suggestion is rounded up to the hour past an hour."""
    watch = WindowWatch()
    for i in range(200):
        watch.ended("p", expired=i % 2 == 0, late_by_s=3200.0 if i % 2 == 0 else None)
    (late, short) = watch.warnings(0.0, {"p": 600.0})
    assert (late.kind, short.kind) == ("late_rewards", "window_too_short")
    assert short.expired_share == 0.5
    assert short.suggested_s == 7200.0  # 600 + 3200, up to the hour
    watch.late("p", 10.0)
    assert [w.kind for w in watch.warnings(61.0, {"p": 600.0})] == ["late_rewards"]
    assert [w.kind for w in watch.warnings(601.0, {"p": 600.0})] == ["window_too_short"]
