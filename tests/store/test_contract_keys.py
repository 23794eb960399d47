"""Managed API keys in the store, on both backends: only a hash is kept, a key is found by
its prefix, revoked for good (and listed for the record), and its use noted at most once
a minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from quorra.access import Role
from quorra.errors import ApiKeyNotFound, IllegalTransition
from quorra.keys import KeySpec, key_hash, prefix_of, shown
from quorra.schema import api_keys

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def new_key(store, name="deploy bot", role="producer", **fields):
    return store.create_api_key(KeySpec.parse({"name": name, "role": role, **fields}), created_by="cli:ops")


def test_a_new_key_is_stored_as_a_hash_and_found_by_its_prefix(store):
    # When a key is created
    created = new_key(store)

    # Then the whole key is returned once, and only its hash is in the database
    assert created.secret.startswith(f"qk_{created.key.prefix}_")
    assert prefix_of(created.secret) == created.key.prefix
    with store.engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == created.key.id)).one()
    assert created.secret not in [str(value) for value in row]
    assert row.hash == key_hash(created.secret)
    # And the prefix finds it, with that hash
    found, stored_hash = store.find_api_key(created.key.prefix)
    assert (found, stored_hash) == (created.key, key_hash(created.secret))
    assert (found.name, found.role, found.tenant, found.created_by) == (
        "deploy bot",
        Role.PRODUCER,
        "default",
        "cli:ops",
    )


def test_an_unknown_prefix_finds_nothing(store):
    assert store.find_api_key("0123456789ab") is None


def test_keys_are_listed_oldest_first_and_revoked_ones_only_on_request(store):
    first = new_key(store, "first")
    new_key(store, "second", role="viewer")
    store.revoke_api_key(first.key.id)

    assert [k.name for k in store.list_api_keys()] == ["second"]
    listed = store.list_api_keys(include_revoked=True)
    assert [k.name for k in listed] == ["first", "second"]
    assert listed[0].revoked_at is not None and listed[1].revoked_at is None


def test_a_key_is_revoked_by_id_or_by_its_shown_prefix_and_only_once(store):
    created = new_key(store)

    revoked = store.revoke_api_key(shown(created.key.prefix))

    assert revoked.id == created.key.id and revoked.revoked_at is not None
    assert store.find_api_key(created.key.prefix)[0].revoked_at == revoked.revoked_at
    with pytest.raises(IllegalTransition, match="revoked already"):
        store.revoke_api_key(created.key.id)


@pytest.mark.parametrize("given", ["7f0e7a4e-5a58-4a57-9a59-1e2cf6f3d6c1", "qk_0123456789ab", "nonsense", ""])
def test_revoking_or_reading_an_unknown_key_is_not_found(store, given):
    with pytest.raises(ApiKeyNotFound):
        store.revoke_api_key(given)
    with pytest.raises(ApiKeyNotFound):
        store.get_api_key(given)


def test_an_expiring_key_gets_its_expiry_from_its_creation_time(store):
    created = store.create_api_key(
        KeySpec.parse({"name": "temp", "role": "viewer", "expires_in_seconds": 3600}), created_by="cli:ops", now=T0
    )
    assert created.key.created_at == T0
    assert created.key.expires_at == T0 + timedelta(hours=1)
    assert created.key.is_active(T0 + timedelta(minutes=59))
    assert not created.key.is_active(T0 + timedelta(hours=1))


def test_last_use_is_written_at_most_once_per_interval(store):
    key = new_key(store).key

    assert store.touch_api_key(key.id, min_interval_seconds=60, now=T0)
    assert not store.touch_api_key(key.id, min_interval_seconds=60, now=T0 + timedelta(seconds=59))
    assert store.touch_api_key(key.id, min_interval_seconds=60, now=T0 + timedelta(seconds=60))
    assert store.get_api_key(key.id).last_used_at == T0 + timedelta(seconds=60)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "role": "admin"},
        {"name": "x", "role": "root"},
        {"name": "x"},
        {"name": " padded ", "role": "viewer"},
        {"name": "x", "role": "viewer", "tenant": "no spaces"},
        {"name": "x", "role": "viewer", "expires_in_seconds": "1h"},
        {"name": "x", "role": "viewer", "expires_in_seconds": None, "name ": "y"},
        {"name": "x", "role": "viewer", "expires_in_seconds": 0},
        {"name": "x", "role": "viewer", "colour": "red"},
    ],
)
def test_an_invalid_key_spec_is_refused_naming_the_field(body):
    from quorra.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as refused:
        KeySpec.parse(body)
    assert refused.value.details
