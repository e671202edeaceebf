"""Throwaway PostgreSQL and MLflow tracking servers, real ones, for tests and benchmarks.

- :func:`postgres_cluster`: ``initdb`` in a temporary folder, ``postgres`` on
  127.0.0.1 and a free port with its unix socket in that folder; run as the
  ``postgres`` user when we are root (PostgreSQL refuses root). Trust
  authentication: the cluster lives for one test session and listens on
  loopback only.
- :func:`mlflow_server`: ``mlflow server`` on that PostgreSQL, artifacts
  proxied through the server into a folder (clients upload over HTTP, as
  they would to a shared server).

Both are started in their own process group through ``cfexp-launch`` (so
they die with this process even when it is killed) and stopped, with every
process of the group, when the ``with`` block ends. The programs come from
``scripts/postgres`` (Debian's packages), which ``make test`` and
``.ci/run`` call.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cfexp.childproc import launcher_path

REPO = Path(__file__).resolve().parents[2]
PG_USER = "postgres"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A service did not start; the message holds the end of its log."""


@dataclass
class Postgres:
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; its URL."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bindir() -> Path:
    """The folder of ``initdb`` and ``postgres`` (installed by scripts/postgres)."""
    found = subprocess.run(
        [str(REPO / "scripts" / "postgres")], capture_output=True, text=True, check=False
    )
    if found.returncode != 0 or not found.stdout.strip():
        raise ServiceError(f"scripts/postgres found no PostgreSQL: {found.stderr.strip()}")
    return Path(found.stdout.strip().splitlines()[-1])


def _as_postgres_user() -> dict[str, object]:
    """Popen arguments that run a program as the postgres user (when we are root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(PG_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": {
        "PATH": "/usr/bin:/bin", "HOME": str(Path(entry.pw_dir)), "LANG": "C.UTF-8",
    }}


def _launch(argv: list[str], folder: Path, log: Path, **popen: object) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group, through cfexp-launch when it is available.

    cfexp-launch asks the kernel to stop the program when this process dies,
    so even a killed test run leaves no server behind.
    """
    launcher = launcher_path()
    if launcher is not None:
        # A copy in the service's folder: the postgres user cannot read root's cache.
        local = folder / "cfexp-launch"
        shutil.copy2(launcher, local)
        if "user" in popen:
            os.chown(local, popen["user"], popen["group"])  # type: ignore[arg-type]
        argv = [str(local), str(folder / "launch-result.json"), *argv]
    with log.open("ab") as out:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=folder, **popen,
        )


def _stop_group(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """``first`` to the whole process group, SIGKILL after a grace period; return once it is empty."""
    pgid = process.pid  # started with start_new_session: the group is the leader's pid
    _signal_group(pgid, first)
    deadline, killed = time.monotonic() + STOP_TIMEOUT_S, False
    while True:
        process.poll()  # reap the leader: as a zombie it would keep the group alive
        if not _signal_group(pgid, 0):
            return
        if time.monotonic() > deadline:
            if killed:
                raise ServiceError(f"process group {pgid} would not stop")
            _signal_group(pgid, signal.SIGKILL)
            deadline, killed = time.monotonic() + STOP_TIMEOUT_S, True
        time.sleep(0.2)


def _signal_group(pgid: int, sig: int) -> bool:
    """Whether the group still had a process to signal."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


@contextmanager
def postgres_cluster(base: Path | None = None) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1, stopped and deleted at the end."""
    bindir = postgres_bindir()
    # Not under pytest's tmp folders: those are root-only (0700) and postgres must enter this one.
    folder = Path(tempfile.mkdtemp(prefix="cfexp-pg-", dir=base))
    as_user = _as_postgres_user()
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])  # type: ignore[arg-type]
    data, log = folder / "data", folder / "postgres.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
             "--no-instructions"],
            cwd=folder, capture_output=True, text=True, check=False, **as_user,  # type: ignore[call-overload]
        )
        if initdb.returncode != 0:
            raise ServiceError(f"initdb failed: {initdb.stdout[-2000:]}{initdb.stderr[-2000:]}")
        port = free_port()
        process = _launch(
            [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
             "-k", str(folder),
             # A throwaway cluster: durability off, room for the server's and workers' pools.
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            folder, log, **as_user,
        )
        _wait_for_postgres(port, process, log)
        yield Postgres(port, folder, process)
    finally:
        if process is not None:
            _stop_group(process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_postgres(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise ServiceError(f"postgres exited with {process.returncode}:\n{_tail(log)}")
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres").close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"postgres did not accept connections: {exc}\n{_tail(log)}") from exc
        time.sleep(0.2)


@contextmanager
def mlflow_server(backend_store_uri: str, folder: Path, workers: int = 2) -> Iterator[MlflowServer]:
    """``mlflow server`` on ``backend_store_uri``, artifacts under ``folder/artifacts``."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts, log = folder / "artifacts", folder / "mlflow-server.log"
    artifacts.mkdir(exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # MLflow 3's background job runner (GenAI scorers, 7 huey consumers): cfexp uses none.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    process = _launch(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", backend_store_uri,
         "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        folder, log, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_http(f"{url}/health", process, log)
        yield MlflowServer(url, artifacts, process)
    finally:
        _stop_group(process, signal.SIGTERM)


def _wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise ServiceError(f"mlflow server exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServiceError(f"mlflow server did not answer {url}:\n{_tail(log)}")
        time.sleep(0.5)
