"""Schema migrations through Alembic, driven from code so that `quorra migrate` works
from an installed wheel (the scripts ship as the package `quorra.migrations`) as well
as from a checkout."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from quorra.errors import DatabaseUnavailable, SchemaOutOfDate

logger = logging.getLogger(__name__)


def migrations_dir() -> Path:
    try:
        import quorra.migrations as shipped  # installed: setup.py maps migrations/ here
    except ImportError:
        return Path(__file__).resolve().parent.parent / "migrations"
    return Path(shipped.__file__).resolve().parent


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


@contextmanager
def _reaching(engine: Engine) -> Iterator[None]:
    """An unreachable database becomes DatabaseUnavailable with the driver's reason, so
    `quorra migrate` and a starting server say what is wrong instead of a traceback."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0][:300]
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseUnavailable(f"cannot reach the database {where}: {reason}") from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _reaching(engine), engine.begin() as conn:
        config = alembic_config(engine)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    logger.info("schema upgraded", extra={"event": "schema.upgraded", "revision": revision})


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _reaching(engine), engine.begin() as conn:
        config = alembic_config(engine)
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    logger.info("schema downgraded", extra={"event": "schema.downgraded", "revision": revision})


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with _reaching(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_at_head(engine: Engine) -> None:
    """Refuse to serve a database whose schema is behind (or ahead of) this code."""
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing (empty database)'} but this Quorra needs {head}:"
            " run `quorra migrate` (or `make migrate`)"
        )
