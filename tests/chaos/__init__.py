"""The fault suite of the robustness issue: 2 banditd replicas on one Redis under load, while
Redis is killed and restarted from its AOF, paused with CLIENT PAUSE, and one replica is
SIGKILLed and restarted. Every reward acknowledged must be in the model exactly once.

    python -m tests.chaos --decisions 10000     # prints the table; exit 1 if a check fails
    make chaos                                  # the same, at the issue's 10,000 decisions

`test_chaos.py` runs the same scenario under pytest. Loopback only, free ports, its own
redis-server; every wait is bounded.
"""
