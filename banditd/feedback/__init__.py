"""Delayed feedback: joining rewards to logged decisions."""
