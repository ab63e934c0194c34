"""API keys: generation, hashing, lookup. No web framework here; service/api/deps.py adapts it.

Keys are `ak_` + 32 random bytes (urlsafe base64). With 256 bits of entropy a brute-force search
is hopeless, so a plain sha256 of the key is a safe thing to store and lets a lookup be one
indexed equality query; slow password KDFs (bcrypt, argon2) only matter for guessable secrets.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Owner, utcnow

log = logging.getLogger(__name__)
KEY_PREFIX = "ak_"
_DISPLAY_PREFIX_LEN = 8
_LAST_USED_GRANULARITY = timedelta(minutes=1)  # bounds the writes a busy key causes
_NEVER = datetime.min.replace(tzinfo=timezone.utc)
# key id -> when recording its use last failed, in this process (one entry per key at most)
_failed_at: dict[str, datetime] = {}


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_display_prefix(key: str) -> str:
    """The first characters after `ak_`: enough to tell keys apart in a listing, useless to an attacker."""
    return key[len(KEY_PREFIX) : len(KEY_PREFIX) + _DISPLAY_PREFIX_LEN]


def create_owner(session: Session, name: str) -> Owner:
    owner = Owner(name=name)
    session.add(owner)
    session.flush()
    return owner


def find_owner(session: Session, id_or_name: str) -> Owner | None:
    return session.get(Owner, id_or_name) or session.scalar(select(Owner).where(Owner.name == id_or_name))


def create_api_key(session: Session, owner: Owner, name: str = "default") -> tuple[ApiKey, str]:
    """A new key for `owner`; returns the row and the secret, which is never stored."""
    secret = generate_key()
    key = ApiKey(owner_id=owner.id, name=name, prefix=key_display_prefix(secret), key_hash=hash_key(secret))
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> Owner | None:
    """The owner of an active key, or None for an unknown or revoked key."""
    if not secret.startswith(KEY_PREFIX):
        return None
    digest = hash_key(secret)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    # The indexed lookup already matched; the constant-time compare is defence in depth.
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.key_hash, digest):
        return None
    now = utcnow()
    last = key.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite returns naive UTC datetimes
        last = last.replace(tzinfo=now.tzinfo)
    last_tried = max(last or _NEVER, _failed_at.get(key.id, _NEVER))
    if now - last_tried > _LAST_USED_GRANULARITY:
        _record_use(session, key, now)
    return key.owner


def _record_use(session: Session, key: ApiKey, now: datetime) -> None:
    """Best effort: a key that cannot record its use (a full disk, a locked or read-only
    database) still authenticates, so read-only requests keep working; this process tries
    again a minute later, not on every request."""
    key_id, prefix = key.id, key.prefix
    key.last_used_at = now
    try:
        session.commit()
        _failed_at.pop(key_id, None)
    except OperationalError:
        session.rollback()
        _failed_at[key_id] = now
        log.warning("could not record the use of API key %s; going on without it", prefix, exc_info=True)


def revoke_api_key(session: Session, key_id: str) -> ApiKey | None:
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key
