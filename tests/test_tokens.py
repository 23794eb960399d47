"""JWT bearer tokens through JwtResolver: HS256 with a secret, RS256 from a real JWKS
endpoint; each kind of bad token is refused with its reason."""

from __future__ import annotations

import time

import jwt
import pytest

from quorra.access import Credential, Role
from quorra.config import Settings
from quorra.errors import AuthUnavailable, NotAuthenticated
from quorra.tokens import JwtResolver
from tests.conftest import free_port
from tests.support.tokens import AUDIENCE, ISSUER, JWT_SECRET, claims, hs256, jwks_server


class Resolve:
    """A JwtResolver called with bearer credentials."""

    def __init__(self, resolver: JwtResolver):
        self.resolver = resolver

    def __call__(self, token: str, kind: str = "bearer"):
        return self.resolver(Credential(kind, token))


def resolver(**fields) -> Resolve:
    base = {"jwt_secret": JWT_SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_leeway_seconds": 0}
    return Resolve(JwtResolver(Settings(**(base | fields))))


@pytest.fixture(scope="module")
def jwks():
    with jwks_server() as jwks:
        yield jwks


def refused(resolve: Resolve, token: str) -> str:
    with pytest.raises(NotAuthenticated) as exc:
        resolve(token)
    return exc.value.message


def test_a_valid_hs256_token_becomes_its_principal():
    principal = resolver()(hs256(sub="alice", role="operator", tenant="acme", name="Alice"))
    assert (principal.subject, principal.name, principal.role, principal.tenant) == (
        "jwt:alice",
        "Alice",
        Role.OPERATOR,
        "acme",
    )


def test_a_worker_token_may_serve_every_tenant():
    principal = resolver()(hs256(role="worker", tenant="*"))
    assert (principal.role, principal.tenant) == (Role.WORKER, "*")


def test_a_token_without_tenant_claim_is_of_the_default_tenant():
    assert resolver()(hs256()).tenant == "default"


def test_what_is_not_a_jwt_is_left_to_other_resolvers():
    assert resolver()("qk_0123456789ab_secret") is None
    assert resolver()("plain-api-key") is None
    assert resolver()(hs256(), kind="api_key") is None  # a JWT comes as a bearer token only


@pytest.mark.parametrize(
    ("fields", "without", "reason"),
    [
        ({"exp": int(time.time()) - 60}, (), "expired"),
        ({"aud": "someone-else"}, (), "audience (aud) is not 'quorra-api'"),
        ({"iss": "https://evil.example/"}, (), "issuer (iss) is not"),
        ({"nbf": int(time.time()) + 3600}, (), "not valid yet"),
        ({}, ("sub",), "no sub claim"),
        ({}, ("exp",), "no exp claim"),
        ({"role": "root"}, (), "role claim names no role"),
        ({}, ("role",), "role claim names no role"),
        ({"tenant": "not a name!"}, (), "tenant claim is not a tenant name"),
        (
            {"tenant": "*", "role": "admin"},
            (),
            "tenant claim: the tenant '*' (every tenant) is for the worker role only",
        ),
        ({"tenant": "**", "role": "worker"}, (), "tenant claim is not a tenant name"),
    ],
)
def test_a_bad_token_is_refused_with_its_reason(fields, without, reason):
    assert reason in refused(resolver(), hs256(without=without, **fields))


def test_a_token_signed_with_another_secret_is_refused():
    assert "signature does not verify" in refused(resolver(), hs256(secret="another-secret-that-is-long-enough!!"))


def test_clock_skew_within_the_leeway_is_tolerated():
    token = hs256(exp=int(time.time()) - 5)
    assert resolver(jwt_leeway_seconds=30)(token).subject == "jwt:alice"
    assert "expired" in refused(resolver(jwt_leeway_seconds=0), token)


def test_without_an_audience_configured_a_token_naming_one_is_refused():
    assert "names an audience" in refused(resolver(jwt_audience=None), hs256())
    assert resolver(jwt_audience=None)(hs256(without=("aud",))).role is Role.ADMIN


def test_a_list_of_roles_at_a_dotted_claim_counts_as_its_strongest():
    token = hs256(without=("role",), realm_access={"roles": ["viewer", "operator", "offline_access"]})
    assert resolver(jwt_role_claim="realm_access.roles")(token).role is Role.OPERATOR


def test_an_unsigned_token_is_never_accepted():
    token = jwt.encode(claims(), None, algorithm="none")
    assert "'none' are not accepted" in refused(resolver(), token)


def test_an_rs256_token_verifies_against_the_jwks(jwks):
    resolve = resolver(jwt_secret=None, jwt_jwks_url=jwks.url)
    assert resolve(jwks.rs256(sub="svc-1", role="worker")).role is Role.WORKER
    fetched = len(jwks.requests)
    resolve(jwks.rs256(sub="svc-2", role="worker"))
    assert len(jwks.requests) == fetched  # the key came from PyJWKClient's cache


def test_an_rs256_token_of_an_unknown_kid_is_refused(jwks):
    resolve = resolver(jwt_secret=None, jwt_jwks_url=jwks.url)
    assert "no key of the identity provider's JWKS" in refused(resolve, jwks.rs256(kid="rotated-away"))


def test_an_hs256_token_is_refused_when_only_a_jwks_is_configured(jwks):
    # the algorithm-confusion attack: an HMAC keyed with something public must not pass
    resolve = resolver(jwt_secret=None, jwt_jwks_url=jwks.url)
    assert "'HS256' are not accepted" in refused(resolve, hs256())


def test_an_unreachable_jwks_is_unavailable_not_unauthenticated(jwks):
    resolve = resolver(jwt_secret=None, jwt_jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    with pytest.raises(AuthUnavailable):
        resolve(jwks.rs256())


def test_an_accepted_token_is_remembered_but_never_past_its_expiry():
    resolve = resolver()
    token = hs256(exp=int(time.time()) + 2)
    first = resolve(token)
    assert resolve(token) is first  # from the cache: not verified again
    [(_, until)] = resolve.resolver._accepted.values()
    assert until <= time.time() + 2


def test_a_refused_token_is_not_remembered():
    resolve = resolver()
    refused(resolve, hs256(aud="elsewhere"))
    assert resolve.resolver._accepted == {}
