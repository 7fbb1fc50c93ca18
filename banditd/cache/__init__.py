"""Cache-aware adapter paging: the pure controller and the per-replica residency state."""
