"""quorra.db: connections for one statement outside a transaction (PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from quorra.db import autocommitted, make_engine

SETTING = text("SELECT current_setting('synchronous_commit')")


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_statement_that_need_not_be_durable_commits_asynchronously_alone(database_url, durable):
    # Given an engine of one pooled connection
    engine = make_engine(database_url, pool_size=1)

    # When a statement runs autocommitted, durable or not, then another on the same session
    with autocommitted(engine, durable=durable) as conn:
        during = conn.execute(SETTING).scalar_one()
    with engine.connect() as conn:
        after = conn.execute(SETTING).scalar_one()
    engine.dispose()

    # Then only the one that need not be durable ran with synchronous_commit off, and the
    # setting did not stay with the pooled session
    assert (during, after) == ("on" if durable else "off", "on")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_postgres_session_reads_uuids_as_their_canonical_text(database_url):
    # Given an engine's session, raw (psycopg2) as quorra.store.direct uses it, and through SQLAlchemy
    engine = make_engine(database_url, pool_size=1)
    query = "SELECT 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid, ARRAY['a0eebc999c0b4ef8bb6d6bb9bd380a12'::uuid]"

    # When it reads a uuid and a uuid[] either way
    with engine.connect() as conn:
        through_sqlalchemy = tuple(conn.execute(text(query)).one())
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute(query)
        raw = cursor.fetchone()
    engine.dispose()

    # Then both are the server's canonical text, never uuid.UUID objects built per id
    expected = ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"])
    assert through_sqlalchemy == expected
    assert raw == expected


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_statements_one_after_another_reuse_the_session_used_last(database_url):
    # Given a pool that has opened three sessions, all returned to it
    engine = make_engine(database_url, pool_size=3)
    opened = [engine.connect() for _ in range(3)]
    for conn in opened:
        conn.close()

    # When statements run one after another
    backends = []
    for _ in range(12):
        with engine.connect() as conn:
            backends.append(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    engine.dispose()

    # Then each takes the session the one before returned (LIFO): one server process stays
    # warm instead of every session's taking turns after idling (the pool's default, FIFO)
    assert len(set(backends)) == 1
