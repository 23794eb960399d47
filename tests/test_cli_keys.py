"""`quorra keys create|list|revoke` as an operator runs it: a subprocess on DATABASE_URL.
The key is printed once, alone on stdout; it then works against the API with its role;
each change is in the audit log under the OS user."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys

from quorra.api import create_app
from quorra.config import Settings
from quorra.notify import PollingNotifier
from tests.conftest import REPO, TEST_API_KEY

CLI_TIMEOUT_SECONDS = 60


def quorra_keys(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "QUORRA_LOG_FORMAT": "text", "QUORRA_LOG_LEVEL": "warning"}
    return subprocess.run(
        [sys.executable, "-m", "quorra.cli.admin", "keys", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def test_a_key_made_on_the_command_line_works_and_is_audited(database_url, store):
    made = quorra_keys(
        "create", "--name", "ci deploy", "--role", "operator", "--expires-in", "30d", database_url=database_url
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("qk_") and "\n" not in key
    assert "role operator" in made.stderr and "shown this once" in made.stderr

    client = create_app(
        Settings(database_url=database_url, api_keys=(TEST_API_KEY,)), store=store, notifier=PollingNotifier(1)
    ).test_client()
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200

    listed = quorra_keys("list", "-o", "json", database_url=database_url)
    [entry] = json.loads(listed.stdout)
    assert (entry["name"], entry["role"], key.startswith(entry["prefix"] + "_")) == ("ci deploy", "operator", True)
    assert key not in listed.stdout
    table = quorra_keys("list", database_url=database_url).stdout
    assert entry["prefix"] in table and "ci deploy" in table

    revoked = quorra_keys("revoke", entry["prefix"], database_url=database_url)
    assert revoked.returncode == 0, revoked.stderr
    assert quorra_keys("list", "-o", "json", database_url=database_url).stdout.strip() == "[]"

    actions = [(r.action, r.actor) for r in store.list_audit().records]
    assert actions == [("key.revoke", f"cli:{getpass.getuser()}"), ("key.create", f"cli:{getpass.getuser()}")]


def test_bad_input_is_refused_with_a_message_and_no_traceback(sqlite_url):
    unknown = quorra_keys("revoke", "qk_0123456789ab", database_url=sqlite_url)
    assert unknown.returncode == 1 and "no API key has the id" in unknown.stderr
    bad = quorra_keys("create", "--name", "x", "--role", "viewer", "--expires-in", "someday", database_url=sqlite_url)
    assert bad.returncode == 2 and "--expires-in" in bad.stderr and "expected a duration" in bad.stderr
    blank = quorra_keys("create", "--name", " padded", "--role", "viewer", database_url=sqlite_url)
    assert blank.returncode == 1 and "invalid key" in blank.stderr and "name:" in blank.stderr
    assert "Traceback" not in bad.stderr
    wrong_role = quorra_keys("create", "--name", "x", "--role", "root", database_url=sqlite_url)
    assert wrong_role.returncode == 2 and "root" in wrong_role.stderr


def test_keys_of_other_tenants_and_of_the_fleet_are_made_on_the_command_line(sqlite_url):
    acme = quorra_keys("create", "--name", "acme admin", "--role", "admin", "--tenant", "acme", database_url=sqlite_url)
    fleet = quorra_keys("create", "--name", "fleet", "--role", "worker", "--tenant", "*", database_url=sqlite_url)
    assert acme.returncode == 0 and "tenant acme" in acme.stderr, acme.stderr
    assert fleet.returncode == 0 and "tenant *" in fleet.stderr, fleet.stderr

    listed = json.loads(quorra_keys("list", "--tenant", "acme", "-o", "json", database_url=sqlite_url).stdout)
    assert [(k["name"], k["tenant"]) for k in listed] == [("acme admin", "acme")]
    every = json.loads(quorra_keys("list", "-o", "json", database_url=sqlite_url).stdout)
    assert sorted(k["tenant"] for k in every) == ["*", "acme"]


def test_every_tenant_is_refused_to_any_role_but_worker(sqlite_url):
    refused = quorra_keys("create", "--name", "root", "--role", "admin", "--tenant", "*", database_url=sqlite_url)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "tenant: the tenant '*' (every tenant) is for the worker role only, not admin" in refused.stderr
