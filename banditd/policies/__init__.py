"""Policy math. PURE: numpy and scipy only, no I/O, no logging."""
