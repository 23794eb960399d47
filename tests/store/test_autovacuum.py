"""Whether autovacuum reaches the jobs table (Store.autovacuum_off): without it the row
versions every lease and settle leaves behind pile up, and the scheduler warns at start."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from quorra.store import Store

TABLE_OFF = "the jobs table's autovacuum_enabled is off"


def test_sqlite_has_no_autovacuum_to_report(sqlite_url):
    store = Store.from_url(sqlite_url)
    try:
        assert store.autovacuum_off() == []
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("spelling", ["off", "false", "0"])
def test_postgres_reports_the_jobs_table_with_autovacuum_turned_off(postgres_url, spelling):
    store = Store.from_url(postgres_url)
    try:
        # Given the jobs table's own autovacuum turned off, in any of PostgreSQL's spellings
        _set_table_autovacuum(store, f"SET (autovacuum_enabled = {spelling})")
        reported_off = store.autovacuum_off()
        # When it is left to the server again
        _set_table_autovacuum(store, "RESET (autovacuum_enabled)")
        reported_reset = store.autovacuum_off()
        with store.engine.connect() as conn:
            server = conn.execute(text("SHOW autovacuum")).scalar_one()
    finally:
        _set_table_autovacuum(store, "RESET (autovacuum_enabled)")
        store.close()
    # Then the table was named while it was off, and afterwards only the server's setting
    # counts (this machine's PostgreSQL may run without autovacuum: CI configurations do)
    assert TABLE_OFF in reported_off
    assert reported_reset == ([] if server == "on" else [f"the server's autovacuum is {server}"])


def _set_table_autovacuum(store: Store, change: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE jobs {change}"))
