"""carebank tests: unit (rules), integration (API on real servers), e2e (a server process)."""
