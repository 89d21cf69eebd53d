"""Commissioners' reports: delivery and outcomes per provider and week."""
