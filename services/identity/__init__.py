"""Identity: tenants, credentials, tokens."""
