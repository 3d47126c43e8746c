"""Where the response cache lives: `cache.url` is a SQLite file or a PostgreSQL database.

- A path or `sqlite:///PATH` (the default): one SQLite file in WAL mode, through the standard library's
  sqlite3. This is the hot path of every job (a cached re-run reads every answer from it), so it has no
  SQLAlchemy layer. WAL needs a local filesystem: not NFS or Lustre.
- `postgresql://USER@HOST[:PORT]/DATABASE`: one database shared by every job on every node, through
  SQLAlchemy and psycopg 3 (`pip install 'culturealign[postgres]'`). The password is never in the URL (a URL
  with one is refused): libpq reads PGPASSWORD or ~/.pgpass, or `cache.password_env` names a variable
  holding it.

Both hold one table `responses` with the same columns and keys, and both write with one short transaction
per request and insert-if-absent (`ON CONFLICT (key) DO NOTHING`): any number of processes share answers,
the first answer stored under a key stays, nothing is ever overwritten. Nothing is modified before the
store is known to be a response cache (or empty).
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from culturealign.errors import CacheError, ConfigError

OUR_TABLES = {"responses", "batch_submissions", "batch_requests"}  # the cache and the Batch API journal

COLUMNS = ("key", "identity", "text", "prompt_tokens", "completion_tokens", "first_token_logprobs", "created", "finish_reason")
HIT_COLUMNS = ("key", "text", "prompt_tokens", "completion_tokens", "first_token_logprobs", "finish_reason")
Row = tuple  # one value per COLUMNS entry

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    first_token_logprobs TEXT,
    created REAL NOT NULL,
    finish_reason TEXT
)
"""
POSTGRES_SCHEMA = SQLITE_SCHEMA.replace("created REAL", "created DOUBLE PRECISION")
_SQLITE_INSERT = (
    # only a duplicate key is ignored (another process stored it first); other errors surface
    f"INSERT INTO responses ({', '.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))}) ON CONFLICT(key) DO NOTHING"
)


@lru_cache(maxsize=64)
def _sqlite_select(count: int) -> str:
    return f"SELECT {', '.join(HIT_COLUMNS)} FROM responses WHERE key IN ({','.join('?' * count)})"


FORMS = "a file path, sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_CREATE_LOCK = 0x63756C74616C6967  # pg_advisory_xact_lock id held while one process creates the table


@dataclass(frozen=True)
class SettingNames:
    """How messages name the settings to fix: config keys for jobs, arguments for `culturealign-cache`."""

    url: str = "cache.url"
    password_env: str = "cache.password_env"

    def password_fix(self) -> str:
        return f"set PGPASSWORD or use ~/.pgpass, or name an environment variable holding it in {self.password_env}"


CONFIG_NAMES = SettingNames()


@dataclass(frozen=True)
class Target:
    kind: str  # "sqlite" | "postgresql"
    display: str  # shown in messages and logs: never holds a password
    path: Path | None = None  # sqlite
    url: Any = None  # postgresql: a sqlalchemy URL without password


def parse_url(url: str | Path, names: SettingNames = CONFIG_NAMES) -> Target:
    """A path, `sqlite:///PATH` or `postgresql://...`; refuses a password in the URL without echoing it."""
    if isinstance(url, Path):
        return Target("sqlite", str(url), path=url)
    text = str(url).strip() if url is not None else ""
    if not text:
        raise ConfigError(f"{names.url} is empty; give {FORMS}")
    if "://" not in text:
        return Target("sqlite", text, path=Path(text).expanduser())
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = text[len("sqlite:///") :].split("?", 1)[0] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"{names.url}={text} names no file (an in-memory cache keeps nothing); use sqlite:///PATH")
        return Target("sqlite", text, path=Path(path).expanduser())
    if scheme in _POSTGRES_SCHEMES:
        return _postgres_target(text, names)
    raise ConfigError(f"{names.url}: unsupported scheme {scheme}://; give {FORMS}")


def _postgres_target(text: str, names: SettingNames) -> Target:
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{names.url} is not a valid database URL; give {FORMS}") from None
    query_password = [key for key in url.query if key.lower() == "password"]
    shown = URL.create("postgresql", url.username, None, url.host, url.port, url.database, url.query)
    display = shown.difference_update_query(query_password).render_as_string(hide_password=True)
    if url.password is not None or query_password:
        raise ConfigError(
            f"{names.url} must not contain a password (it would be logged): use {display} and {names.password_fix()}"
        )
    return Target("postgresql", display, url=url.set(drivername="postgresql+psycopg"))


def _password(password_env: str | None, names: SettingNames) -> str | None:
    """The password from the variable `password_env` names; None lets libpq read PGPASSWORD / ~/.pgpass."""
    if password_env is None or password_env == "":
        return None
    name = str(password_env)
    if not _ENV_VAR_NAME.fullmatch(name):  # never echo it: it may be the password itself
        raise ConfigError(
            f"{names.password_env} must be the NAME of an environment variable (e.g. CULTUREALIGN_CACHE_PASSWORD), "
            "not the password itself; export the password and pass its variable name"
        )
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"{names.password_env} names {name}, which is not set; export {name}=<password>, or unset "
            f"{names.password_env} to use PGPASSWORD / ~/.pgpass"
        )
    return value


def open_store(url: str | Path, password_env: str | None = None, create: bool = True, names: SettingNames = CONFIG_NAMES):
    """The store `url` names. create=False: it must already hold a response cache (a copy's source)."""
    target = parse_url(url, names)
    if target.kind == "sqlite":
        return SQLiteStore(target, create, names)
    return PostgresStore(target, _password(password_env, names), create, names)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:400] if text else type(error).__name__


class SQLiteStore:
    def __init__(self, target: Target, create: bool, names: SettingNames):
        self.display, self.path = target.display, target.path
        path = self.path
        if path.is_dir():
            raise ConfigError(
                f"{names.url}={self.display} is a directory; set {names.url} to a file, e.g. {path / 'responses.sqlite'}"
            )
        exists = path.exists()
        if not exists and not create:
            raise ConfigError(f"{names.url}: the response cache {self.display} does not exist")
        try:
            if not exists:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        except (sqlite3.DatabaseError, OSError) as error:
            raise ConfigError(
                f"cannot open the response cache {self.display} ({error}); set {names.url} elsewhere"
            ) from None
        try:
            if exists:
                self._check_is_a_cache(names)  # before anything is written: WAL mode alone changes the file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(SQLITE_SCHEMA)
            self._add_missing_columns()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise ConfigError(
                f"cannot open the response cache {self.display} ({error}); delete the file or set {names.url} elsewhere"
            ) from None
        except ConfigError:
            self._db.close()
            raise

    def _check_is_a_cache(self, names: SettingNames) -> None:
        """An empty file or a cache is fine; another program's SQLite database is left untouched."""
        tables = sorted(
            name
            for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%'")
        )
        if "responses" not in tables:
            if set(tables) <= OUR_TABLES:  # empty, or only a Batch API journal so far
                return
            raise ConfigError(
                f"{self.display} is a SQLite database of another program (tables: {', '.join(tables[:5])}), not a "
                f"response cache; nothing was changed: set {names.url} to another file"
            )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        missing = sorted(set(COLUMNS) - {"finish_reason"} - columns)
        if missing:
            raise ConfigError(
                f"{self.display} has a table 'responses' that is not a response cache (no column {', '.join(missing)}); "
                f"nothing was changed: set {names.url} to another file"
            )

    def _add_missing_columns(self) -> None:
        """Caches written before `finish_reason` existed keep working (their answers read it as unknown)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "finish_reason" not in columns:
            try:
                self._db.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT")
            except sqlite3.OperationalError as error:  # another process added it first
                if "duplicate column" not in str(error):
                    raise

    def _failed(self, error: sqlite3.Error, action: str) -> CacheError:
        return CacheError(
            f"the response cache {self.display} failed while {action} ({_one_line(error)}); every answer stored "
            "before is kept: fix the cause (or set cache.url elsewhere) and re-run the same command"
        )

    def fetch(self, keys: Sequence[str]) -> Iterable[tuple]:
        """(key, text, prompt_tokens, completion_tokens, first_token_logprobs, finish_reason) of the keys found."""
        try:
            if not keys:
                return ()
            if len(keys) <= 500:  # the hot path: one request's keys, one query, rows straight from the cursor
                return self._db.execute(_sqlite_select(len(keys)), keys)
            found: list[tuple] = []
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                chunk = keys[start : start + 500]
                found.extend(self._db.execute(_sqlite_select(len(chunk)), chunk))
            return found
        except sqlite3.Error as error:
            raise self._failed(error, "reading") from None

    def insert(self, rows: Sequence[Row]) -> int:
        """Insert-if-absent; the number of rows actually inserted."""
        try:
            with self._db:
                return self._db.executemany(_SQLITE_INSERT, rows).rowcount
        except sqlite3.Error as error:
            raise self._failed(error, "storing answers") from None

    def scan(self, after: str, limit: int) -> list[Row]:
        """Up to `limit` whole rows with a key greater than `after`, in key order (copying a cache)."""
        try:
            query = f"SELECT {', '.join(COLUMNS)} FROM responses WHERE key > ? ORDER BY key LIMIT ?"
            return self._db.execute(query, (after, limit)).fetchall()
        except sqlite3.Error as error:
            raise self._failed(error, "reading") from None

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class PostgresStore:
    """SQLAlchemy Core on psycopg 3. One pooled connection per process, checked before use (pre-ping), so a
    restarted server is reconnected to; a server that stays away fails the job with one CacheError line."""

    def __init__(self, target: Target, password: str | None, create: bool, names: SettingNames):
        self.display, self.path = target.display, None
        try:
            import psycopg  # noqa: F401  (the `postgres` extra)
        except ImportError:
            raise ConfigError(
                f"{names.url} is a PostgreSQL URL but its driver is not installed: pip install 'culturealign[postgres]'"
            ) from None
        import sqlalchemy as sa
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        connect_args: dict[str, Any] = {"application_name": "culturealign"}
        # a server that vanishes without closing the connection is noticed in about a minute, not never
        defaults = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                    "keepalives_count": 3}
        connect_args |= {key: value for key, value in defaults.items() if key not in target.url.query}
        if password is not None:
            connect_args["password"] = password  # never part of the URL, so never in a message or a log
        self._engine = sa.create_engine(
            target.url, connect_args=connect_args, pool_size=1, max_overflow=4, pool_pre_ping=True
        )
        table = sa.Table(
            "responses",
            sa.MetaData(),
            *(sa.Column(name, sa.Text if name in ("key", "identity", "text", "first_token_logprobs", "finish_reason")
                        else sa.Double if name == "created" else sa.Integer) for name in COLUMNS),
        )
        self._columns = [table.c[name] for name in COLUMNS]
        self._hit_columns = [table.c[name] for name in HIT_COLUMNS]
        self._table, self._sa = table, sa
        self._insert = pg_insert(table).on_conflict_do_nothing(index_elements=[table.c.key]).returning(table.c.key)
        try:
            with self._engine.begin() as connection:
                self._prepare(connection, create, names)
        except sa.exc.SQLAlchemyError as error:
            self._engine.dispose()
            raise ConfigError(self._open_failure(error, names)) from None
        except ConfigError:
            self._engine.dispose()
            raise

    def _prepare(self, connection, create: bool, names: SettingNames) -> None:
        text = self._sa.text
        if connection.execute(text("SELECT to_regclass('responses')")).scalar() is None:
            if not create:
                raise ConfigError(f"{names.url}: {self.display} holds no response cache (no table responses)")
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CREATE_LOCK})
            connection.execute(text(POSTGRES_SCHEMA))  # IF NOT EXISTS: a process that waited for the lock skips it
        columns = set(
            connection.execute(
                text("SELECT attname FROM pg_attribute WHERE attrelid = 'responses'::regclass AND attnum > 0 "
                     "AND NOT attisdropped")
            ).scalars()
        )
        missing = sorted(set(COLUMNS) - columns)
        if missing:
            raise ConfigError(
                f"{self.display} has a table 'responses' that is not a response cache (no column {', '.join(missing)}); "
                f"nothing was changed: set {names.url} to another database"
            )

    def _open_failure(self, error: Exception, names: SettingNames) -> str:
        reason = _one_line(getattr(error, "orig", None) or error)
        low = reason.lower()
        if "password" in low:  # "password authentication failed", "no password supplied"
            fix = f"wrong or missing password: {names.password_fix()}"
        elif "database" in low and "does not exist" in low:
            fix = f"create the database (createdb) or fix {names.url}"
        elif "permission denied" in low:
            fix = f"grant this role the rights on table responses (or its schema), or fix {names.url}"
        else:
            fix = f"check that the database server is running and reachable, or fix {names.url}"
        return f"cannot open the response cache {self.display} ({reason}); {fix}"

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except self._sa.exc.SQLAlchemyError as error:
            reason = _one_line(getattr(error, "orig", None) or error)
            raise CacheError(
                f"the response cache {self.display} failed while {action} ({reason}); every answer stored before is "
                "kept: check the database server (cache.url) and re-run the same command"
            ) from None

    def fetch(self, keys: Sequence[str]) -> list[tuple]:
        found: list[tuple] = []
        if not keys:
            return found
        select, key = self._sa.select, self._table.c.key
        with self._guard("reading"), self._engine.connect() as connection:
            for start in range(0, len(keys), 5000):
                chunk = list(keys[start : start + 5000])
                found.extend(connection.execute(select(*self._hit_columns).where(key.in_(chunk))).all())
        return found

    def insert(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        with self._guard("storing answers"), self._engine.begin() as connection:
            inserted = connection.execute(self._insert, [dict(zip(COLUMNS, row)) for row in rows]).all()
        return len(inserted)

    def scan(self, after: str, limit: int) -> list[Row]:
        key = self._table.c.key
        query = self._sa.select(*self._columns).where(key > after).order_by(key).limit(limit)
        with self._guard("reading"), self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]

    def count(self) -> int:
        query = self._sa.select(self._sa.func.count()).select_from(self._table)
        with self._guard("counting"), self._engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def close(self) -> None:
        try:
            self._engine.dispose()
        except Exception:  # noqa: BLE001 - closing a connection to a server that went away
            pass
