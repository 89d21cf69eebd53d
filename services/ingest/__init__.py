"""Ingest: visit events from carers' phones, matched, verified and committed in groups."""
