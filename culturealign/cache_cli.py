"""`culturealign-cache copy SRC DST`: copy a response cache between stores (SQLite file <-> PostgreSQL).

SRC and DST are what `cache.url` accepts: a path, `sqlite:///PATH` or `postgresql://USER@HOST[:PORT]/DB`
(the password from PGPASSWORD / ~/.pgpass, or from the variable `--password-env` names). Every row is
copied as it is (endpoint identity and time included) unless DST already holds its key, so copying again
adds nothing and a partly copied cache is completed. SRC is only read; DST is created if missing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from culturealign.errors import CultureAlignError
from culturealign.models.cache import ResponseCache
from culturealign.models.cache_store import FORMS, SettingNames


@dataclass
class CopyCount:
    copied: int = 0
    skipped: int = 0  # already in DST


def copy_cache(src: ResponseCache, dst: ResponseCache, batch: int = 1000) -> CopyCount:
    """Insert-if-absent every row of `src` into `dst`, one transaction per batch."""
    count = CopyCount()
    for rows in src.rows(batch):
        inserted = dst.insert_rows(rows)
        count.copied += inserted
        count.skipped += len(rows) - inserted
    return count


def copy_command(args: argparse.Namespace) -> str:
    src = ResponseCache(args.src, args.password_env, create=False, names=SettingNames("SRC", "--password-env"))
    try:
        dst = ResponseCache(args.dst, args.password_env, names=SettingNames("DST", "--password-env"))
        try:
            count = copy_cache(src, dst, args.batch)
        finally:
            dst.close()
    finally:
        src.close()
    return f"copied {count.copied} answers from {src.url} to {dst.url}; skipped {count.skipped} already there"


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="culturealign-cache", description="Manage culturealign response caches.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    copy = commands.add_parser(
        "copy",
        help="copy every answer from SRC to DST that DST does not hold yet",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument("src", metavar="SRC", help=f"the cache to read: {FORMS}")
    copy.add_argument("dst", metavar="DST", help="the cache to write (created if missing), same forms")
    copy.add_argument(
        "--password-env",
        metavar="NAME",
        help="environment variable holding the PostgreSQL password (default: PGPASSWORD or ~/.pgpass)",
    )
    copy.add_argument("--batch", type=int, default=1000, help="rows per transaction (default 1000)")
    copy.set_defaults(run=copy_command)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(args.run(args), flush=True)
    except CultureAlignError as error:
        print(f"culturealign-cache: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
