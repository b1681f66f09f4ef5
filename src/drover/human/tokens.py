"""Invite tokens and CSRF tokens.

A rater signs in with a random invite token (`secrets.token_urlsafe`, 192 bits); only
its sha256 is stored, so a copy of the database does not let anyone sign in. A form's
CSRF token is an HMAC of the session (the token's hash, or a random pre-login nonce)
under the study's secret: a page of another origin can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token(secret: str, session: str) -> str:
    return hmac.new(secret.encode("utf-8"), f"csrf:{session}".encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, session: str, given: str) -> bool:
    return bool(session) and bool(given) and hmac.compare_digest(csrf_token(secret, session), given)
