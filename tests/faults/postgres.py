"""A throwaway PostgreSQL cluster of the test's own (initdb + pg_ctl on a free port under a
temporary directory), which the test may stop and start again. The shared server is never
touched. initdb refuses to run as root, so as root every command runs as `postgres`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2

from quorra import migrate
from quorra.db import make_engine
from tests.conftest import free_port

DATABASE = "quorra"


def _tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    assert found, f"{name} is not installed (PostgreSQL server binaries are needed for this test)"
    return found


class PrivatePostgres:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="quorra-faults-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"
        self._as = []
        if os.geteuid() == 0:
            os.chown(self.directory, pwd.getpwnam("postgres").pw_uid, -1)
            self._as = ["runuser", "-u", "postgres", "--"]

    def create(self) -> PrivatePostgres:
        """initdb, start, and a migrated database `quorra`."""
        self._run(_tool("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
        finally:
            conn.close()
        engine = make_engine(self.url)
        migrate.upgrade(engine)
        engine.dispose()
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
            " -c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl("start", "-l", str(self.directory / "server.log"), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once, as a restart for maintenance does."""
        self._pg_ctl("stop", "-m", mode)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        self._run(_tool("pg_ctl"), "-D", str(self.data), "-w", "-t", "30", *args)

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as, *command], check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
