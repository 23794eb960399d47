"""`Authorization: Bearer <jwt>` on the REST API: a good token acts with its role and tenant
(and is audited under its subject); each kind of bad token is a 401 saying why; with no
JWT settings a token is just an unknown credential."""

from __future__ import annotations

import time

import pytest

from quorra.api import create_app
from tests.api.conftest import AUTH, assert_error
from tests.factories import make_job
from tests.support.tokens import AUDIENCE, ISSUER, JWT_SECRET, hs256, jwks_server


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def jwt_client(settings, store, notifier):
    jwt_settings = settings.model_copy(
        update={"jwt_secret": JWT_SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_leeway_seconds": 0}
    )
    return create_app(jwt_settings, store=store, notifier=notifier).test_client()


def test_a_valid_token_acts_with_its_role_and_is_audited_under_its_subject(jwt_client, store):
    job = make_job(store)
    token = hs256(sub="ops@example.com", role="operator", name="Ops")

    assert jwt_client.post(f"/v1/jobs/{job.id}/cancel", headers=bearer(token)).status_code == 200

    [entry] = jwt_client.get("/v1/audit", headers=AUTH).get_json()["entries"]
    assert (entry["actor"], entry["actor_name"], entry["action"]) == ("jwt:ops@example.com", "Ops", "job.cancel")


BAD_TOKENS = {
    "expired": lambda: hs256(exp=int(time.time()) - 60),
    "audience": lambda: hs256(aud="another-api"),
    "issuer": lambda: hs256(iss="https://elsewhere.test/"),
    "signature": lambda: hs256(secret="a-different-secret-but-long-enough!!"),
    "names no role": lambda: hs256(role="superuser"),
    "not a well-formed JWT": lambda: "eyJub3QganNvbg.e30.c2ln",  # its header is not JSON
    "is for the worker role only": lambda: hs256(role="admin", tenant="*"),  # every tenant: workers only
}


@pytest.mark.parametrize("reason", list(BAD_TOKENS))
def test_a_bad_token_is_a_401_saying_why(jwt_client, reason):
    error = assert_error(jwt_client.get("/v1/jobs", headers=bearer(BAD_TOKENS[reason]())), 401, "unauthenticated")
    assert reason in error["message"]


def test_a_viewer_token_is_refused_a_change_with_a_403(jwt_client, store):
    job = make_job(store)
    refused = jwt_client.post(f"/v1/jobs/{job.id}/cancel", headers=bearer(hs256(role="viewer")))
    assert assert_error(refused, 403, "permission_denied")["details"]["permission"] == "jobs:manage"


def test_a_token_acts_within_its_tenant(jwt_client):
    acme = bearer(hs256(sub="ann", role="admin", tenant="acme"))
    schedule = {"name": "nightly", "interval_seconds": 60, "job": {"type": "t"}}
    assert jwt_client.post("/v1/schedules", json=schedule, headers=acme).status_code == 201

    assert jwt_client.get("/v1/schedules", headers=AUTH).get_json() == {"schedules": []}
    assert jwt_client.get("/v1/schedules/nightly", headers=acme).status_code == 200
    [entry] = jwt_client.get("/v1/audit", headers=acme).get_json()["entries"]
    assert (entry["tenant"], entry["actor"]) == ("acme", "jwt:ann")


def test_tokens_share_idempotency_keys_by_subject_not_with_others(jwt_client):
    first = {**bearer(hs256(sub="alice", role="producer")), "Idempotency-Key": "k1"}
    again = {**bearer(hs256(sub="alice", role="producer", iat=int(time.time()) - 1)), "Idempotency-Key": "k1"}
    other = {**bearer(hs256(sub="bob", role="producer")), "Idempotency-Key": "k1"}
    body = {"type": "t", "payload": {}}

    created = jwt_client.post("/v1/jobs", json=body, headers=first)
    replayed = jwt_client.post("/v1/jobs", json=body, headers=again)
    separate = jwt_client.post("/v1/jobs", json=body, headers=other)

    assert (created.status_code, replayed.status_code, separate.status_code) == (201, 200, 201)
    assert replayed.get_json()["id"] == created.get_json()["id"] != separate.get_json()["id"]


def test_without_jwt_settings_a_token_is_an_unknown_credential(client):
    error = assert_error(client.get("/v1/jobs", headers=bearer(hs256())), 401, "unauthenticated")
    assert "bearer token is not valid" in error["message"]


def test_an_rs256_token_from_a_jwks_is_accepted(settings, store, notifier):
    with jwks_server() as jwks:
        jwks_settings = settings.model_copy(update={"jwt_jwks_url": jwks.url, "jwt_audience": AUDIENCE})
        client = create_app(jwks_settings, store=store, notifier=notifier).test_client()
        assert client.get("/v1/jobs", headers=bearer(jwks.rs256(role="viewer"))).status_code == 200
        assert_error(client.get("/v1/jobs", headers=bearer(hs256())), 401, "unauthenticated")
