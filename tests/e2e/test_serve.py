"""`carebank serve` as a real process: URLs given, embedded default, production refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import Servers

pytestmark = pytest.mark.e2e
CAREBANK = [sys.executable, "-m", "services.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CAREBANK_ENV")}
    env["CAREBANK_ARGON2_PROFILE"] = "CHEAPEST"
    env.update(changes)
    return env


@contextmanager
def serving(env: dict[str, str], port: int, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = cwd / f"serve-{port}-{time.monotonic_ns()}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*CAREBANK, "serve", "--port", str(port)], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAREBANK, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def admin_token(port: int, created: dict[str, str]) -> str:
    response = httpx.post(f"http://127.0.0.1:{port}/v1/auth/token", json=created, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_serve_with_urls_stops_cleanly_on_ctrl_c(servers: Servers, database_url: str, tmp_path: Path) -> None:
    env = base_env(DATABASE_URL=database_url, REDIS_URL=servers.redis_url, CAREBANK_DATA_DIR=str(tmp_path / "data"))
    port = free_port()
    with serving(env, port, tmp_path) as process:
        made = cli(env, tmp_path, "credentials", "create", "--role", "admin")
        assert made.returncode == 0, made.stderr
        created = json.loads(made.stdout)
        assert set(created) == {"client_id", "client_secret"}
        token = admin_token(port, created)
        tenant = httpx.post(
            f"http://127.0.0.1:{port}/v1/tenants",
            json={"name": "E2E"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert tenant.status_code == 201
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert not (tmp_path / "data" / "pg").exists(), "with URLs set nothing embedded starts"


def test_embedded_default_starts_reuses_data_and_stops(tmp_path: Path) -> None:
    env = base_env(CAREBANK_DATA_DIR=str(tmp_path / "data"))
    port = free_port()
    with serving(env, port, tmp_path) as process:
        made = cli(env, tmp_path, "credentials", "create", "--role", "admin")
        assert made.returncode == 0, made.stderr
        created = json.loads(made.stdout)
        admin_token(port, created)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    secret_file = tmp_path / "data" / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    signing_secret = secret_file.read_text()
    with serving(env, port, tmp_path):
        admin_token(port, created)  # the credential made in the first run is still there
    assert secret_file.read_text() == signing_secret


@pytest.mark.parametrize(
    ("missing", "env_changes"),
    [
        ("CAREBANK_JWT_SECRET", {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x"}),
        ("DATABASE_URL", {"REDIS_URL": "redis://x", "CAREBANK_JWT_SECRET": "s" * 40}),
        ("REDIS_URL", {"DATABASE_URL": "postgresql://x/y", "CAREBANK_JWT_SECRET": "s" * 40}),
    ],
)
def test_production_refuses_silent_defaults(tmp_path: Path, missing: str, env_changes: dict[str, str]) -> None:
    env = base_env(CAREBANK_ENV="production", CAREBANK_ARGON2_PROFILE="RFC_9106_LOW_MEMORY", **env_changes)
    result = cli(env, tmp_path, "serve")
    assert result.returncode == 2
    assert missing in result.stderr
    assert "Traceback" not in result.stderr
