"""Leader election for the scheduler: one process acts, the others wait to take over.

PostgreSQL: a session advisory lock, taken and held on a connection of its own (never a
pooled one handed back and forth). The lock lives exactly as long as that session, so a
leader that dies (kill -9, a lost host) frees it as soon as the server sees the
connection close, and a follower's next attempt wins. SQLite: an exclusive ``flock`` on
a file next to the database, which the kernel drops when the process dies.

    hold()      keep or take the leadership; True while this process may act
    is_held()   is it still ours? Checked before every duty: a dead connection means no
    release()   give it up (graceful shutdown); close() also frees the connection pool

Both kinds refuse to guess: any doubt (an error, a replaced lock file) counts as lost,
and a lost PostgreSQL session is closed for real so the server frees its lock.

The advisory lock belongs to a server session, so the scheduler must reach PostgreSQL
directly or through a session-mode pool, never a transaction-pooling PgBouncer (which
shares one server session between clients).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, and_, column, exists, func, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from quorra.db import make_engine
from quorra.errors import InvalidConfig

logger = logging.getLogger(__name__)

# Every scheduler of one database contends for this key ("quor" in ASCII). Advisory locks
# are scoped to a database, so deployments sharing a server do not collide.
LOCK_KEY = 0x71756F72
LOCK_FILE_SUFFIX = "-scheduler.lock"
APPLICATION_NAME = "quorra-scheduler-leader"
# If the leader's host vanishes without closing its socket, the server notices within
# about idle + interval * count seconds (or 10 s of unacknowledged data) and frees the
# lock; the OS defaults take hours.
KEEPALIVE = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;"
    " SET tcp_user_timeout = 10000"
)

_pg_locks = table(
    "pg_locks",
    column("locktype"),
    column("pid"),
    column("granted"),
    column("classid"),
    column("objid"),
    column("objsubid"),
)


class Leader(Protocol):
    description: str

    def hold(self) -> bool: ...

    def is_held(self) -> bool: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def make_leader(database_url: str) -> Leader:
    """The lock that fits the database: an advisory lock on PostgreSQL, a file on SQLite."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        return PostgresLeader(database_url)
    if not url.database or url.database == ":memory:":
        raise InvalidConfig("the scheduler needs an SQLite database file, not an in-memory database")
    return FileLeader(Path(url.database + LOCK_FILE_SUFFIX))


def owner_id() -> str:
    """Who holds the leadership, for logs and the lock file: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


class PostgresLeader:
    """A session advisory lock on a dedicated connection (autocommit, so no transaction
    stays open and idle_in_transaction_session_timeout never ends the session)."""

    def __init__(self, url: str, key: int = LOCK_KEY):
        # The session names its process, so pg_stat_activity tells an operator who leads.
        self.engine = make_engine(url, pool_size=1, application_name=f"{APPLICATION_NAME} {owner_id()}"[:63])
        self.key = key
        self.description = f"postgresql advisory lock {key}"
        self._conn: Connection | None = None
        self._held = False

    def hold(self) -> bool:
        return self.is_held() or self._try_lock()

    def is_held(self) -> bool:
        if self._held:
            self._held = bool(self._ask(self._still_locked()))
            if not self._held:
                self._drop()  # a session we cannot vouch for must not keep the lock alive
        return self._held

    def release(self) -> None:
        if self._held:
            self._ask(select(func.pg_advisory_unlock(self.key)))
        self._drop()

    def close(self) -> None:
        self.release()
        self.engine.dispose()

    def _try_lock(self) -> bool:
        self._held = bool(self._ask(select(func.pg_try_advisory_lock(self.key))))
        return self._held

    def _still_locked(self):
        # A bigint advisory key shows in pg_locks as classid (high half), objid (low half), objsubid 1.
        mine = and_(
            _pg_locks.c.locktype == "advisory",
            _pg_locks.c.pid == func.pg_backend_pid(),
            _pg_locks.c.granted,
            _pg_locks.c.classid == self.key >> 32,
            _pg_locks.c.objid == self.key & 0xFFFFFFFF,
            _pg_locks.c.objsubid == 1,
        )
        return select(exists().where(mine))

    def _ask(self, query) -> object:
        """One scalar over the dedicated connection; None (and the connection dropped) on error."""
        try:
            return self._connection().execute(query).scalar_one()
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc))[:500]
            logger.warning("leader connection failed", extra={"event": "leadership.error", "error": reason})
            self._drop()
            return None

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(KEEPALIVE)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.invalidate()  # close the session itself; a pooled session would keep the lock
            conn.close()


class FileLeader:
    """An exclusive, non-blocking flock on `path`. The file is never deleted (deleting it
    would let a newcomer lock a fresh file while we still hold the old one); if someone
    else deletes or replaces it, we count the leadership as lost."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        self.description = f"file lock {self.path}"
        self._fd: int | None = None

    def hold(self) -> bool:
        return self.is_held() or self._try_lock()

    def is_held(self) -> bool:
        if self._fd is not None and not self._is_our_file(self._fd):
            self.release()
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    close = release

    def _try_lock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not self._is_our_file(fd):  # replaced between our open and our lock
            os.close(fd)
            return False
        self._fd = fd
        _write_owner(fd)
        return True

    def _is_our_file(self, fd: int) -> bool:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False
        ours = os.fstat(fd)
        return (ours.st_dev, ours.st_ino) == (current.st_dev, current.st_ino)


def _write_owner(fd: int) -> None:
    """Leave the holder's name in the file for an operator wondering who leads."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, (owner_id() + "\n").encode(), 0)
