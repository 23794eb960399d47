"""The authenticator of a server process (REST, dashboard, gRPC): the configured keys of
QUORRA_API_KEY and QUORRA_READONLY_API_KEYS first (quorra.access), then managed keys from
the database (quorra.keys), then JWT bearer tokens when QUORRA_JWT_SECRET or
QUORRA_JWT_JWKS_URL is set (quorra.tokens)."""

from __future__ import annotations

from quorra.access import Authenticator
from quorra.config import Settings
from quorra.keys import KeyResolver, KeyStore
from quorra.tokens import JwtResolver


def build_authenticator(settings: Settings, store: KeyStore) -> tuple[Authenticator, KeyResolver]:
    """The authenticator, and its managed-key resolver (to forget a key revoked here at once)."""
    authenticator = settings.authenticator()
    keys = KeyResolver(store, settings.key_cache_ttl_seconds)
    authenticator.add_resolver(keys)
    if JwtResolver.enabled(settings):
        authenticator.add_resolver(JwtResolver(settings))
    return authenticator, keys
