"""Release checkpoint (plan STEP 0): the commit under rehearsal exists, is clean, and is complete.

The plan checks out a branch, applies a patch and pushes; a rehearsal instead pins what it tests:
the ref resolves to one commit, the working tree holds nothing uncommitted (so what runs is what
was committed), and the files the patch must bring are present *at that commit*.
Only `git` is needed (argv lists, no shell); no Airflow.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The plan's STEP 0 checkpoint: "All new files present". A trailing "/" means a directory.
PLAN_REQUIRED_PATHS: tuple[str, ...] = (
    "packages/database-client/",
    "packages/trustmath/",
    "infra/",
    "scripts/",
    "docs/",
)
DIRTY_PATHS_SHOWN = 5
# `git status --porcelain` codes of an unresolved merge: the plan's "no merge conflicts".
UNMERGED = {"DD", "AU", "UD", "UA", "DU", "AA", "UU"}


class ReleaseCheckError(RuntimeError):
    """The release cannot be rehearsed; `problems` lists every reason, each naming what."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("release checkpoint failed: " + "; ".join(problems))


def _git(repo: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # LC_ALL=C keeps git's messages stable; GIT_OPTIONAL_LOCKS=0 stops `status` writing the index.
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _dirty_paths(repo: Path) -> tuple[list[str], list[str]]:
    """(dirty paths, unmerged paths) of the working tree, untracked files included."""
    out = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=normal")
    if out.returncode != 0:
        raise ReleaseCheckError([f"git status failed in {repo}: {_first_line(out.stderr)}"])
    dirty, unmerged = [], []
    entries = out.stdout.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename/copy is followed by its source path
            i += 1
        (unmerged if code in UNMERGED else dirty).append(path)
    return dirty, unmerged


def _show(paths: list[str]) -> str:
    shown = ", ".join(paths[:DIRTY_PATHS_SHOWN])
    more = len(paths) - DIRTY_PATHS_SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


def _object_type(repo: Path, commit: str, path: str) -> str | None:
    out = _git(repo, "cat-file", "-t", f"{commit}:{path.strip('/')}")
    return out.stdout.strip() if out.returncode == 0 else None


def check_release(repository: str | Path, ref: str, required_paths: Sequence[str] = PLAN_REQUIRED_PATHS,
                  *, require_clean: bool = True) -> dict[str, Any]:
    """Resolve `ref` in `repository` and check the tree is clean and `required_paths` exist there.

    Raises ReleaseCheckError naming the missing repository, the unknown ref, the dirty paths
    (a few) and every missing file. Returns a JSON-able summary of the commit under rehearsal.
    """
    repo = Path(repository).expanduser()
    if not repo.is_dir():
        raise ReleaseCheckError([f"repository {repo} does not exist"])
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ReleaseCheckError([f"{repo} is not a git repository: {_first_line(top.stderr)}"])
    repo = Path(top.stdout.strip())
    if not isinstance(ref, str) or not ref.strip() or ref.startswith("-"):
        # A ref starting with "-" would be read by git as an option.
        raise ReleaseCheckError([f"ref {ref!r} is not a branch, tag or commit name"])

    resolved = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise ReleaseCheckError([f"ref {ref!r} does not name a commit in {repo}"])
    commit = resolved.stdout.strip()

    problems: list[str] = []
    if require_clean:
        dirty, unmerged = _dirty_paths(repo)
        if unmerged:
            problems.append(f"merge conflicts in {len(unmerged)} path(s): {_show(unmerged)}")
        if dirty:
            problems.append(f"working tree of {repo} is not clean: {len(dirty)} uncommitted path(s): {_show(dirty)}")

    missing = []
    for path in required_paths:
        kind = _object_type(repo, commit, path)
        wants_dir = path.endswith("/")
        if kind is None:
            missing.append(path)
        elif wants_dir and kind != "tree":
            missing.append(f"{path} (a file, not a directory)")
        elif not wants_dir and kind != "blob":
            missing.append(f"{path} (a directory, not a file)")
    if missing:
        problems.append(f"missing at {commit[:12]} ({ref}): {', '.join(missing)}")
    if problems:
        raise ReleaseCheckError(problems)

    # %x00 separators: a subject may hold any character but NUL.
    info = _git(repo, "show", "-s", "--format=%h%x00%s%x00%cI%x00%an", commit)
    short, subject, committed_at, author = (info.stdout.rstrip("\n").split("\0") + ["", "", "", ""])[:4]
    ref_kind = "commit"
    for kind, prefix in (("branch", "refs/heads/"), ("tag", "refs/tags/")):
        if _git(repo, "show-ref", "--verify", "--quiet", prefix + ref).returncode == 0:
            ref_kind = kind
            break
    return {
        "repository": str(repo),
        "ref": ref,
        "ref_kind": ref_kind,
        "commit": commit,
        "short_commit": short or commit[:12],
        "subject": subject,
        "committed_at": committed_at,
        "author": author,
        "clean_checked": require_clean,
        "files_checked": list(required_paths),
    }
