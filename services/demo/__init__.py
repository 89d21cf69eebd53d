"""`carebank demo`: a county played through the real API, summarised, and drawn as an HTML report."""
