"""`python -m bench`: throughput and latency next to peers and machine ceilings (see docs/bench.md)."""
