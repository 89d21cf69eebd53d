"""Monitoring: alerts when a visit is late, missed, left without a check-out, or checked outside the home."""
