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
