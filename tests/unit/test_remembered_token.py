"""The API's JWT decoding is remembered per encoded token: the claims come back the same, expiry is
still checked at each use, and a token that does not verify is refused every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token

from services.common import auth
from services.common.auth import RememberedToken

SECRET = "a-secret-of-at-least-thirty-two-bytes!"


def encoded(minutes: float = 15, secret: str = SECRET) -> str:
    token = Token(sub="cli_1", exp=datetime.now(tz=UTC) + timedelta(minutes=minutes), extras={"role": "carer"})
    return token.encode(secret, "HS256")


def test_a_token_is_verified_once_and_gives_the_same_claims() -> None:
    token = encoded()
    hits = auth._verified.cache_info().hits
    first = RememberedToken.decode(token, SECRET, "HS256")
    second = RememberedToken.decode(token, SECRET, "HS256")
    assert (second.sub, second.extras) == (first.sub, first.extras) == ("cli_1", {"role": "carer"})
    assert auth._verified.cache_info().hits == hits + 1


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = encoded(minutes=1)
    RememberedToken.decode(token, SECRET, "HS256")

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Later:
            return cls.fromtimestamp((datetime.now(tz=UTC) + timedelta(minutes=2)).timestamp(), tz=UTC)

    monkeypatch.setattr(auth, "datetime", Later)
    with pytest.raises(NotAuthorizedException):
        RememberedToken.decode(token, SECRET, "HS256")


def test_a_token_that_does_not_verify_is_refused_every_time() -> None:
    genuine = encoded()
    RememberedToken.decode(genuine, SECRET, "HS256")
    head, body, signature = genuine.split(".")
    tampered = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    for _ in range(2):
        with pytest.raises(NotAuthorizedException):
            RememberedToken.decode(tampered, SECRET, "HS256")
        with pytest.raises(NotAuthorizedException):
            RememberedToken.decode(encoded(secret="another-secret-of-thirty-two-bytes!!"), SECRET, "HS256")
        with pytest.raises(NotAuthorizedException):
            RememberedToken.decode(genuine, "a-different-secret-thirty-two-bytes!!", "HS256")
