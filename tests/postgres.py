"""A throw-away PostgreSQL server for the tests: Debian's `postgresql` package binaries, a fresh cluster in a
temporary directory, listening on 127.0.0.1 only, password (SCRAM) authentication over TCP.

PostgreSQL refuses to run as root: when the tests run as root (CI), the cluster belongs to the `postgres`
system user that the Debian package creates and every server command runs as that user (subprocess's
`user=`); otherwise it runs as the current user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "the tests need a PostgreSQL server (Debian/Ubuntu: apt-get install -y --no-install-recommends postgresql; "
    ".ci/run does this)"
)
USER = "culturealign"
PASSWORD = "pg-test-Zq7w3Rk9vB2x"  # the tests check it never reaches a file, a log or a message


class PostgresUnavailable(RuntimeError):
    pass


def server_binaries() -> Path:
    """The bin directory of the newest installed PostgreSQL server (initdb, pg_ctl)."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found = shutil.which("initdb")
    if found:
        candidates.append(found)
    if not candidates:
        raise PostgresUnavailable(f"no initdb found (looked in /usr/lib/postgresql/<version>/bin and PATH): {INSTALL_HINT}")

    def version(path: str) -> tuple:
        match = re.search(r"/postgresql/(\d+)/", path)
        return (int(match.group(1)),) if match else (0,)

    return Path(max(candidates, key=version)).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = server_binaries()
        self.run_as = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(f"running as root and there is no `postgres` user: {INSTALL_HINT}") from None
        self.root = Path(tempfile.mkdtemp(prefix="culturealign-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.run_as is not None:
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.run_as is not None:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
        )
        pwfile.unlink()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        user = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []} if self.run_as else {}
        result = subprocess.run(
            [str(self.bin / tool), *args], capture_output=True, text=True, cwd=self.root, timeout=120, **user
        )
        if check and result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{tool} failed: {result.stderr.strip()[-2000:]} {tail}")
        return result

    def start(self) -> "PostgresServer":
        # fsync off: a test server; committed rows still survive the server's own crash (not the machine's)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """mode "immediate": the server dies as on a power cut of its node (no clean shutdown)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, user: str = USER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=database, autocommit=True
        )

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL (without password)."""
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
