"""carebank services: one package per area, plus the app and the CLI."""
