"""Signed single-use links for customers: HMAC-SHA256 over purpose, subject, link id and expiry.

The signature proves the service issued the link; the used_links table makes it single-use.

Referral codes are signed too: `<referrer>.<signature>`. A referrer earns a share of the commissions on the leads
its code brought, paid into a payable account named by the referrer, so only a code the marketplace issued may name
one (anybody can submit a lead, with any code).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from marketplace.errors import Gone, NotFound


@dataclass(frozen=True, slots=True)
class LinkClaims:
    purpose: str
    subject: str
    link_id: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_link(secret: str, purpose: str, subject: str, expires_at: datetime) -> str:
    payload = json.dumps(
        {"p": purpose, "s": subject, "j": secrets.token_hex(12), "e": int(expires_at.timestamp())},
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def read_link(secret: str, token: str, purpose: str, now: datetime) -> LinkClaims:
    """Check signature, purpose and expiry; a forged or foreign token is a 404, an expired one a 410."""
    try:
        payload_b64, mac_b64 = token.split(".", 1)
        payload = _unb64(payload_b64)
        mac = _unb64(mac_b64)
    except (ValueError, TypeError) as exc:
        raise NotFound("no such link") from exc
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise NotFound("no such link")
    data = json.loads(payload)
    if data.get("p") != purpose:
        raise NotFound("no such link")
    claims = LinkClaims(
        purpose=data["p"],
        subject=data["s"],
        link_id=data["j"],
        expires_at=datetime.fromtimestamp(data["e"], UTC),
    )
    if claims.expires_at <= now:
        raise Gone("this link has expired")
    return claims


REFERRER = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_REFERRAL_MAC_CHARS = 22  # 132 bits of the HMAC, base64url


def _referral_mac(secret: str, referrer: str) -> str:
    return _b64(hmac.new(secret.encode(), f"referral:{referrer}".encode(), hashlib.sha256).digest())[
        :_REFERRAL_MAC_CHARS
    ]


def sign_referral_code(secret: str, referrer: str) -> str:
    """The referral code of a referrer (lower-case letters, digits, `-` and `_`, at most 40): the same every time."""
    if not REFERRER.fullmatch(referrer):
        raise ValueError(f"a referrer is 1-40 lower-case letters, digits, '-' or '_', not {referrer!r}")
    return f"{referrer}.{_referral_mac(secret, referrer)}"


def read_referral_code(secret: str, code: str) -> str | None:
    """The referrer a code names, or None if the marketplace did not issue it."""
    referrer, _, mac = code.partition(".")
    expected = _referral_mac(secret, referrer).encode()
    # Compared as bytes: compare_digest refuses str that is not ASCII (a code is anybody's input).
    if not REFERRER.fullmatch(referrer) or not hmac.compare_digest(mac.encode(), expected):
        return None
    return referrer


def referrer_of(code: str) -> str:
    """The referrer named by a code already checked at intake (read_referral_code)."""
    return code.partition(".")[0]
