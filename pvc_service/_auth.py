"""Bearer tokens and roles: ``read`` < ``publish`` < ``admin``.

The tokens file has one token per line, ``ROLE NAME TOKEN``; ``#`` starts a
comment. Without a tokens file the service is open and everyone acts with the
``admin`` role (the command line refuses to expose such a service beyond
loopback unless told to).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from ._errors import ServiceError

__all__ = ["ROLES", "Token", "Principal", "TokensFileError", "load_tokens", "tokens_from_mapping",
           "authenticate", "require"]

ROLES = ("read", "publish", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Token:
    role: str
    name: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request. ``name`` is None on an open service."""

    role: str
    name: str | None

    def author(self, requested: str | None) -> str:
        """The author to record: the token's name wins over what the request says."""
        if self.name is not None:
            return self.name
        return (requested or "").strip() or "anonymous"


class TokensFileError(ValueError):
    pass


def load_tokens(path: str | Path) -> dict[str, Token]:
    """Read a tokens file; raises `TokensFileError` naming the bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TokensFileError(f"{path}: cannot read: {error}") from None
    tokens: dict[str, Token] = {}
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise TokensFileError(f"{path}:{lineno}: expected 'ROLE NAME TOKEN'")
        role, name, token = parts
        if role not in _RANK:
            raise TokensFileError(f"{path}:{lineno}: unknown role {role!r} (one of {', '.join(ROLES)})")
        if len(token) < 8:
            raise TokensFileError(f"{path}:{lineno}: token too short (at least 8 characters)")
        key = _key(token)
        if key in tokens:
            raise TokensFileError(f"{path}:{lineno}: this token is already given to {tokens[key].name!r}")
        tokens[key] = Token(role, name)
    if not tokens:
        raise TokensFileError(f"{path}: no tokens (every request would be refused)")
    return tokens


def tokens_from_mapping(mapping: dict[str, tuple[str, str]]) -> dict[str, Token]:
    """``{token: (role, name)}`` -> the form `ServiceConfig.tokens` takes (for in-process apps)."""
    out: dict[str, Token] = {}
    for token, (role, name) in mapping.items():
        if role not in _RANK:
            raise ValueError(f"unknown role {role!r}")
        out[_key(token)] = Token(role, name)
    return out


def _key(token: str) -> str:
    # tokens are looked up by digest so that the secret itself is not kept as
    # a dictionary key (and lookups do not compare secrets character by character)
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def authenticate(request: Request, tokens: dict[str, Token] | None) -> Principal:
    if tokens is None:
        return Principal("admin", None)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ServiceError("unauthorized", "a token is required (Authorization: Bearer TOKEN)",
                           headers={"WWW-Authenticate": "Bearer"})
    token = tokens.get(_key(value.strip()))
    if token is None:
        raise ServiceError("unauthorized", "unknown token", headers={"WWW-Authenticate": "Bearer"})
    return Principal(token.role, token.name)


def require(role: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the request's principal, if it has at least ``role``."""
    needed = _RANK[role]

    async def dependency(request: Request) -> Principal:
        principal = authenticate(request, request.app.state.pvc.config.tokens)
        if _RANK[principal.role] < needed:
            raise ServiceError("forbidden", f"this needs the {role!r} role; {principal.name!r} has {principal.role!r}")
        return principal

    return dependency
