"""The API in-process against real PostgreSQL and Redis."""
