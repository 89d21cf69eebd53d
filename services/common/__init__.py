"""Plumbing every area's api shares: ids, problems, the caller's identity, pagination."""
