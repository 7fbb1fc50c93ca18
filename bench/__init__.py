"""`python -m bench`: throughput and latency next to peers and ceilings (docs/bench.md)."""
