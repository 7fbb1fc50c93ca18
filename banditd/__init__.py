"""banditd: an online contextual-bandit routing daemon."""

__version__ = "0.1.0"
