"""Lay the target out as a git repository with two releases, so that a rollback is a real checkout.

    python -m aura_target.releases build DEST [--previous-version 1.0.0] [--candidate-version 1.1.0]
                                              [--candidate-faults SPEC]
    python -m aura_target.releases checkout DEST v1.0.0     # roll back (then restart the services)
    python -m aura_target.releases current DEST             # the VERSION checked out in DEST

DEST gets two commits: the previous release (tag v<previous>) and the candidate (tag v<candidate>,
checked out after a fresh build). Each has a VERSION file that the services report in /healthz and
aura_build_info; run them with PYTHONPATH=DEST. --candidate-faults bakes a FAULTS file into the
candidate only (see aura_target.faults): a broken candidate whose rollback really fixes things.

Commits have fixed authors and dates, so the same sources always give the same commit ids: a second
build of unchanged sources changes nothing (and leaves the current checkout alone). If the sources
changed, a DEST built by this tool is rebuilt; any other non-empty DEST is refused.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .faults import FaultConfigError, parse_faults

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # include/target
SHIPPED = ("aura_target", "migrations", "README.md")
MARKER_KEY = "aura.release-builder"  # git config key that marks a DEST this tool owns
IDENTITY = ("-c", "user.name=aura release builder", "-c", "user.email=releases@aura-target.invalid",
            "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main",
            "-c", "advice.detachedHead=false")
DATES = {"previous": "2026-01-01T00:00:00+0000", "candidate": "2026-01-02T00:00:00+0000"}


class ReleaseError(RuntimeError):
    pass


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    done = subprocess.run(["git", *IDENTITY, "-C", str(repo), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "VERSION", "FAULTS")
    for name in SHIPPED:
        source = SOURCE_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, dest / name)


def _commit(repo: Path, version: str, which: str, faults: str | None) -> str:
    (repo / "VERSION").write_text(version + "\n")
    fault_file = repo / "FAULTS"
    if faults:
        fault_file.write_text(faults + "\n")
    elif fault_file.exists():
        fault_file.unlink()
    git(repo, "add", "-A")
    message = f"Release {version} ({which})" + (f"\n\nBaked-in faults: {faults}" if faults else "")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message, date=DATES[which])
    git(repo, "tag", f"v{version}")
    return git(repo, "rev-parse", "HEAD")


def _build_into(repo: Path, previous: str, candidate: str, candidate_faults: str | None) -> dict[str, str]:
    git(repo, "init", "--quiet")
    git(repo, "config", MARKER_KEY, "true")
    _copy_sources(repo)
    # Running a release writes bytecode into it; ignoring it keeps `git status` clean after a deploy.
    (repo / ".gitignore").write_text("__pycache__/\n*.pyc\n")
    # Normalise modes and times away from the working tree: only content decides the commit ids.
    for path in repo.rglob("*"):
        if ".git" not in path.parts and path.is_file():
            path.chmod(0o644)
    tags = {f"v{previous}": _commit(repo, previous, "previous", None)}
    tags[f"v{candidate}"] = _commit(repo, candidate, "candidate", candidate_faults)
    return tags


def existing_tags(dest: Path) -> dict[str, str] | None:
    if not (dest / ".git").is_dir():
        return None
    try:
        if git(dest, "config", "--get", MARKER_KEY) != "true":
            return None
        lines = git(dest, "show-ref", "--tags").splitlines()
    except ReleaseError:
        return None
    return {ref.rsplit("/", 1)[-1]: sha for sha, ref in (line.split() for line in lines)}


def build(dest: Path, previous: str = "1.0.0", candidate: str = "1.1.0",
          candidate_faults: str | None = None) -> tuple[dict[str, str], bool]:
    """Build the release repository at dest. Returns ({tag: commit}, changed)."""
    if previous == candidate:
        raise ReleaseError("previous and candidate versions must differ")
    if candidate_faults:
        parse_faults(candidate_faults)  # refuse to bake a FAULTS file that the services would refuse
    dest = dest.resolve()
    with tempfile.TemporaryDirectory(prefix="aura-release-", dir=dest.parent if dest.parent.exists() else None) as tmp:
        staged = Path(tmp) / "repo"
        staged.mkdir()
        tags = _build_into(staged, previous, candidate, candidate_faults)
        current = existing_tags(dest)
        if current is not None and all(current.get(tag) == sha for tag, sha in tags.items()):
            return tags, False
        if dest.exists() and any(dest.iterdir()) and current is None:
            raise ReleaseError(f"{dest} exists and is not a release repository built by this tool; "
                               "choose an empty or new directory")
        git(staged, "checkout", "--quiet", f"v{candidate}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(dest))
    return tags, True


def checkout(dest: Path, tag: str) -> str:
    """Check out a release tag (discarding local edits to shipped files); returns its VERSION."""
    if existing_tags(dest) is None:
        raise ReleaseError(f"{dest} is not a release repository built by this tool")
    git(dest, "checkout", "--quiet", "--force", tag)
    return current_version(dest)


def current_version(dest: Path) -> str:
    return (dest / "VERSION").read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aura_target.releases", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or confirm) the two-release repository at DEST")
    b.add_argument("dest", type=Path)
    b.add_argument("--previous-version", default="1.0.0")
    b.add_argument("--candidate-version", default="1.1.0")
    b.add_argument("--candidate-faults", default=None, help="TARGET_FAULTS syntax, baked into the candidate")
    c = sub.add_parser("checkout", help="check out a release tag in DEST (rollback or roll forward)")
    c.add_argument("dest", type=Path)
    c.add_argument("tag")
    v = sub.add_parser("current", help="print the VERSION checked out in DEST")
    v.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            tags, changed = build(args.dest, args.previous_version, args.candidate_version, args.candidate_faults)
            for tag, sha in tags.items():
                print(f"{tag} {sha}")
            print(f"{'built' if changed else 'up to date'}: {args.dest} at {current_version(args.dest)}")
        elif args.command == "checkout":
            print(f"checked out {args.tag}: VERSION {checkout(args.dest, args.tag)}")
        else:
            print(current_version(args.dest))
    except (ReleaseError, FaultConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
