"""KeyResolver: a managed key becomes its principal; lookups are cached for the TTL (the
revocation bound across processes), forgotten at once in the process that revoked, and
last_used_at is written at most once a minute. On both backends, with a moved clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.access import Credential, Role
from quorra.keys import KeyResolver, KeySpec, generate, prefix_of


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The real store, counting the resolver's calls to it."""

    def __init__(self, store):
        self.store = store
        self.finds = 0
        self.touches = 0

    def find_api_key(self, prefix):
        self.finds += 1
        return self.store.find_api_key(prefix)

    def touch_api_key(self, key_id, **options):
        self.touches += 1
        return self.store.touch_api_key(key_id, **options)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def counted(store):
    return CountingStore(store)


class Resolve:
    """A KeyResolver called with X-API-Key credentials."""

    def __init__(self, resolver: KeyResolver):
        self.resolver = resolver

    def __call__(self, key: str):
        return self.resolver(Credential("api_key", key))

    def forget(self, key_id: str) -> None:
        self.resolver.forget(key_id)


@pytest.fixture
def resolve(counted, clock):
    return Resolve(KeyResolver(counted, ttl_seconds=5, clock=clock))


def create(store, role="operator", **fields):
    return store.create_api_key(KeySpec.parse({"name": "ci", "role": role, **fields}), created_by="cli:ops")


def test_a_managed_key_becomes_its_principal(store, resolve):
    created = create(store, tenant="acme")
    principal = resolve(created.secret)
    assert (principal.subject, principal.name, principal.role, principal.tenant, principal.key_id) == (
        f"key:{created.key.id}",
        "ci",
        Role.OPERATOR,
        "acme",
        created.key.id,
    )


def test_a_wrong_secret_with_a_real_prefix_is_refused(store, resolve):
    created = create(store)
    forged = f"qk_{created.key.prefix}_{'A' * 43}"
    assert resolve(forged) is None


@pytest.mark.parametrize("credential", ["", "qk_", "qk_short_x", "qk_0123456789ab_", "Qk_0123456789ab_x", "eyJ.a.b"])
def test_what_is_not_shaped_like_a_key_is_not_looked_up(resolve, counted, credential):
    assert resolve(credential) is None
    assert counted.finds == 0


def test_generated_keys_parse_back_to_their_prefix():
    for _ in range(200):  # the secret may hold '_' and '-'
        prefix, secret = generate()
        assert prefix_of(secret) == prefix


def test_lookups_are_cached_for_the_ttl_so_a_revocation_elsewhere_applies_within_it(store, resolve, counted, clock):
    created = create(store)
    assert resolve(created.secret) is not None
    # When another process revokes it
    store.revoke_api_key(created.key.id)
    # Then this process still accepts it until its cached lookup is TTL old, with no query
    clock.now += 4.9
    assert resolve(created.secret) is not None
    assert counted.finds == 1
    # And refuses it from then on
    clock.now += 0.2
    assert resolve(created.secret) is None
    assert counted.finds == 2


def test_a_revocation_in_this_process_applies_at_once(store, resolve):
    created = create(store)
    assert resolve(created.secret) is not None
    store.revoke_api_key(created.key.id)
    resolve.forget(created.key.id)
    assert resolve(created.secret) is None


def test_an_expired_key_is_refused_even_from_the_cache(store, resolve, counted):
    soon = datetime.now(UTC) - timedelta(seconds=1)
    created = store.create_api_key(
        KeySpec.parse({"name": "temp", "role": "viewer", "expires_in_seconds": 60}),
        created_by="cli:ops",
        now=soon - timedelta(seconds=60),
    )
    assert resolve(created.secret) is None


def test_last_use_is_written_once_a_minute_not_per_request(store, resolve, counted, clock):
    created = create(store)
    for _ in range(10):
        resolve(created.secret)
    assert counted.touches == 1
    assert store.get_api_key(created.key.id).last_used_at is not None
    clock.now += 61
    resolve(created.secret)
    assert counted.touches == 2


def test_a_flood_of_made_up_keys_does_not_grow_the_cache_without_bound(store, counted, clock):
    resolver = KeyResolver(counted, ttl_seconds=5, clock=clock)
    resolver.MAX_CACHED = 50
    for _ in range(200):
        assert resolver(Credential("api_key", generate()[1])) is None
    assert len(resolver._cache) <= 50
