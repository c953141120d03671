"""Signed customer links: what is signed reads back; anything forged, foreign or altered is a 404, a late one a 410."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from marketplace.errors import Gone, NotFound
from marketplace.identity.links import read_link, sign_link

SECRET = "unit-test-secret-0123456789abcdef"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=14)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(text: str, index: int) -> str:
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]


def test_a_signed_link_reads_back_what_was_signed():
    token = sign_link(SECRET, "survey", "lead_01abc", EXPIRES)
    claims = read_link(SECRET, token, "survey", NOW)
    assert claims.purpose == "survey"
    assert claims.subject == "lead_01abc"
    assert claims.expires_at == EXPIRES
    assert re.fullmatch(r"[0-9a-f]{24}", claims.link_id)
    # It travels in a URL path: only URL-safe characters, no padding, no slash.
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)


def test_every_link_is_a_distinct_single_use_token():
    first = sign_link(SECRET, "survey", "lead_01abc", EXPIRES)
    second = sign_link(SECRET, "survey", "lead_01abc", EXPIRES)
    assert first != second
    assert read_link(SECRET, first, "survey", NOW).link_id != read_link(SECRET, second, "survey", NOW).link_id


def _forgeries() -> dict[str, str]:
    token = sign_link(SECRET, "survey", "lead_01abc", EXPIRES)
    other = sign_link(SECRET, "survey", "lead_02xyz", EXPIRES)
    payload, mac = token.split(".")
    claims = json.loads(_unb64(payload))
    rewritten = _b64(json.dumps(dict(claims, s="lead_02xyz"), separators=(",", ":")).encode())
    extended = _b64(json.dumps(dict(claims, e=claims["e"] + 86400 * 365), separators=(",", ":")).encode())
    return {
        "payload-byte-changed": f"{_flip(payload, 10)}.{mac}",
        "signature-byte-changed": f"{payload}.{_flip(mac, 10)}",
        "subject-rewritten": f"{rewritten}.{mac}",
        "expiry-extended": f"{extended}.{mac}",
        "signature-of-another-link": f"{payload}.{other.split('.')[1]}",
        "signed-with-another-secret": sign_link("another-secret-0123456789abcdef", "survey", "lead_01abc", EXPIRES),
        "signature-cut": f"{payload}.{mac[:-4]}",
        "no-signature": payload,
        "empty": "",
        "not-base64": "!!!.???",
        "bad-padding": "a.b",
        "not-ascii": "é.ü",
    }


@pytest.mark.parametrize("name", list(_forgeries()))
def test_a_forged_or_altered_link_is_not_found(name):
    with pytest.raises(NotFound) as raised:
        read_link(SECRET, _forgeries()[name], "survey", NOW)
    # One answer for every forgery: no hint of which part was wrong.
    assert raised.value.detail == "no such link"


def test_a_link_for_another_purpose_is_not_found():
    token = sign_link(SECRET, "survey", "lead_01abc", EXPIRES)
    with pytest.raises(NotFound):
        read_link(SECRET, token, "unsubscribe", NOW)
    assert read_link(SECRET, token, "survey", NOW).purpose == "survey"


def test_a_link_is_gone_from_its_expiry_on():
    token = sign_link(SECRET, "survey", "lead_01abc", EXPIRES)
    assert read_link(SECRET, token, "survey", EXPIRES - timedelta(seconds=1)).subject == "lead_01abc"
    for late in (EXPIRES, EXPIRES + timedelta(seconds=1), EXPIRES + timedelta(days=400)):
        with pytest.raises(Gone):
            read_link(SECRET, token, "survey", late)


def test_a_forged_link_is_not_found_even_when_expired():
    # Expiry is only checked on a genuine link, so a 410 never confirms that a forgery was well made.
    token = sign_link(SECRET, "survey", "lead_01abc", NOW - timedelta(days=1))
    payload, mac = token.split(".")
    with pytest.raises(NotFound):
        read_link(SECRET, f"{payload}.{_flip(mac, 5)}", "survey", NOW)
    with pytest.raises(Gone):
        read_link(SECRET, token, "survey", NOW)
