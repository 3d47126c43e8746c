"""Where a run comes from and where it sits in its sweep: the command line, the code (git commit, dirty flag,
package version), the swept keys and the number of jobs.

A multirun's jobs may run in other processes (joblib, submitit), whose command line is not the user's, so
the launching process works all of this out once and leaves it in the sweep folder (`SWEEP_FILE`) beside
the parent run id; every job reads it from there.
"""

from __future__ import annotations

import getpass
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

import culturealign
from culturealign.tracking import names

PROGRAM = "culturealign"
_ESCAPE = re.compile(r"\\(.)")
# Swept keys already named in a run name by the model, country and style parts.
NAMED_BY_DEFAULT = ("model", "model.name", "country", "style")


def source_tags(argv: list[str] | None = None) -> dict[str, str]:
    """MLflow's standard source tags and ours: entry point, user, package version, git commit and dirty flag
    of the code that ran (none when the package is not a git checkout)."""
    argv = sys.argv if argv is None else argv
    tags = {
        names.SOURCE_NAME_TAG: entry_point(argv),
        names.SOURCE_TYPE_TAG: "LOCAL",
        names.VERSION_TAG: culturealign.__version__,
    }
    try:
        tags[names.USER_TAG] = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        pass
    return tags | git_tags(Path(culturealign.__file__).resolve().parent.parent)


def git_tags(folder: Path) -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    tags = {names.GIT_COMMIT_TAG: commit, names.GIT_DIRTY_TAG: "true" if dirty else "false"}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags[names.GIT_BRANCH_TAG] = branch
    return tags


def entry_point(argv: list[str]) -> str:
    first = Path(argv[0]).name if argv else PROGRAM
    return f"python -m {PROGRAM}" if first == "__main__.py" else first


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (program name, then the arguments), quoted for a shell."""
    argv = sys.argv if argv is None else argv
    return shlex.join([entry_point(argv), *argv[1:]])


def plain_override(override: str) -> str:
    """`model.base_url=http\\://x\\:1/v1` (Hydra escapes values in a multirun) as a person types it, when
    Hydra reads the plain form back to the same value; otherwise the escaped form."""
    plain = _ESCAPE.sub(r"\1", override)
    try:
        parser = OverridesParser.create()
        if parser.parse_override(plain).value() == parser.parse_override(override).value():
            return plain
    except Exception:  # noqa: BLE001 - not an override Hydra reads without its config: keep it as given
        pass
    return override


def override_values(overrides: list[str]) -> dict[str, str]:
    """`key=value` overrides -> {key: value as typed}, keys without a leading +/~."""
    values = {}
    for override in overrides:
        key, _, value = plain_override(override).partition("=")
        values[key.lstrip("+~")] = value
    return values


@dataclass
class SweepPlan:
    """What the launching process knows about a multirun before its first job starts."""

    swept: list[str]  # keys with several values, in Hydra's order (sweeper params, then the command line)
    n_jobs: int | None  # None when a sweep (a glob) needs Hydra's config loader to count
    command: str
    tags: dict[str, str]  # source_tags() of the launching process
    started: float = field(default_factory=time.time)

    @classmethod
    def of(cls, sweeper_params: dict[str, str], overrides: list[str], argv: list[str] | None = None) -> "SweepPlan":
        arguments = [f"{key}={value}" for key, value in sweeper_params.items()] + list(overrides)
        swept: dict[str, int] = {}
        counted = True
        for argument in arguments:
            try:
                override = OverridesParser.create().parse_override(argument)
            except Exception:  # noqa: BLE001 - glob() and friends need the config loader
                counted = False
                swept[argument.partition("=")[0].lstrip("+~")] = 0
                continue
            key = override.get_key_element().lstrip("+~")
            if override.is_sweep_override():
                values = list(override.sweep_string_iterator()) if override.is_discrete_sweep() else []
                counted = counted and bool(values)
                swept[key] = len(values)
            else:
                swept.pop(key, None)  # a later plain value replaces an earlier sweep of the same key
        n_jobs = 1
        for count in swept.values():
            n_jobs *= count
        return cls(list(swept), n_jobs if counted else None, command_line(argv), source_tags(argv))

    def save(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / names.SWEEP_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, sweep_dir: Path) -> "SweepPlan | None":
        path = sweep_dir / names.SWEEP_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def describe(self) -> str:
        """`country x style x model.temperature (12 jobs)`"""
        jobs = f"{self.n_jobs} jobs" if self.n_jobs is not None else "jobs"
        return f"{' x '.join(self.swept) or 'one job'} ({jobs})"


def run_name(model_name: str, country: str, style: str, swept: dict[str, str]) -> str:
    """`gpt-4o us/cot`, then every other swept value: `gpt-4o us/cot model.temperature=0.7`."""
    extra = [f"{key}={value}" for key, value in swept.items() if key not in NAMED_BY_DEFAULT]
    return " ".join([model_name, f"{country}/{style}", *extra])
