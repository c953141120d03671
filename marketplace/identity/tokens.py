"""API tokens: random, shown once, stored as SHA-256 (a high-entropy secret needs no slow hash)."""

from __future__ import annotations

import hashlib
import secrets


def new_token(kind: str) -> str:
    return f"mk{kind[0]}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
