"""API keys: format, hashing at rest, lookup, revocation."""
from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from service.auth import authenticate, create_api_key, create_owner, find_owner, generate_key, revoke_api_key
from service.db.models import ApiKey
from service.db.session import session_scope


def test_key_format_is_prefixed_high_entropy_urlsafe():
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert re.fullmatch(r"ak_[A-Za-z0-9_-]{43}", k), k  # 32 bytes -> 43 base64url characters


def test_only_the_hash_is_stored_and_lookup_works(database_url):
    with session_scope(database_url) as session:
        owner = create_owner(session, "carol")
        key, secret = create_api_key(session, owner, name="ci")
        key_id = key.id
    with session_scope(database_url) as session:
        row = session.get(ApiKey, key_id)
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == secret[3:11] and secret not in (row.key_hash, row.prefix, row.name)
        assert authenticate(session, secret).name == "carol"
        assert session.get(ApiKey, key_id).last_used_at is not None
        assert authenticate(session, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
        assert authenticate(session, "not-a-key") is None
        assert find_owner(session, "carol").id == find_owner(session, owner.id).id
    with session_scope(database_url) as session:
        assert revoke_api_key(session, key_id).revoked_at is not None
        assert revoke_api_key(session, "key_missing") is None
    with session_scope(database_url) as session:
        assert authenticate(session, secret) is None
        assert session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == key_id)) is not None
