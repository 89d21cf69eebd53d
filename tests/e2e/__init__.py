"""A real `carebank` process driven over HTTP."""
