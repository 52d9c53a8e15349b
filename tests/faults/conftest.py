"""A PostgreSQL server of the test's own, which the test may stop and start (a registry outage).

It is made with the same Debian binaries CI installs for the shared test server (`.ci/postgres.sh`), on a
free port, and removed after the test. Without PostgreSQL installed the tests skip, unless
CRLAB_REQUIRE_PG=1 (as in CI), where that is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``start()``, ``stop()``, and ``url``: a database on a server only this test uses."""

    def __init__(self, bindir: str) -> None:
        self.bin, self.port = bindir, _free_port()
        self.data = tempfile.mkdtemp(prefix="crlab-pg-outage-")
        os.chmod(self.data, 0o755)
        self.root = os.getuid() == 0
        if self.root:
            shutil.chown(self.data, "postgres", "postgres")
        self._as_server(f"{self.bin}/initdb -D {self.data}/db -U postgres --auth=trust -E UTF8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_server(self, command: str) -> None:
        argv = ["su", "postgres", "-s", "/bin/bash", "-c", command] if self.root else ["bash", "-c", command]
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_server(f"{self.bin}/pg_ctl -D {self.data}/db -l {self.data}/log -w -o '{opts}' start")

    def stop(self) -> None:
        self._as_server(f"{self.bin}/pg_ctl -D {self.data}/db -w -m fast stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def pg_server() -> Iterator[PgServer]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not found:
        if os.environ.get("CRLAB_REQUIRE_PG") == "1":
            pytest.fail("CRLAB_REQUIRE_PG=1 but PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("needs PostgreSQL's server binaries (apt-get install postgresql)")
    server = PgServer(found[-1])
    server.start()
    try:
        yield server
    finally:
        server.remove()
