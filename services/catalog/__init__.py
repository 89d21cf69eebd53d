"""Catalog: providers, carers, people (service users) and contracts."""
