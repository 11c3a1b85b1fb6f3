"""STEP 0 release checkpoint against a real git repository built in the test."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rehearsal.work.release import PLAN_REQUIRED_PATHS, ReleaseCheckError, check_release


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=y@example.com",
                           "-c", "init.defaultBranch=main", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository shaped like the patched branch: main + staging/ops-test tagged rc1."""
    root = tmp_path / "aura"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("aura\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "staging/ops-test")
    for folder in ("packages/database-client", "packages/trustmath", "infra", "scripts", "docs"):
        (root / folder).mkdir(parents=True)
        (root / folder / "README.md").write_text(f"{folder}\n")
    (root / "scripts" / "db_backup.sh").write_text("#!/bin/sh\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "staging: apply full ops patch (HNSW/metrics/backup/vault/e2e)")
    git(root, "tag", "rc1")
    return root


def test_resolves_tag_and_branch(repo: Path):
    head = git(repo, "rev-parse", "HEAD")
    by_tag = check_release(repo, "rc1", PLAN_REQUIRED_PATHS + ("scripts/db_backup.sh",))
    assert by_tag["commit"] == head
    assert by_tag["ref_kind"] == "tag"
    assert by_tag["short_commit"] and head.startswith(by_tag["short_commit"])
    assert by_tag["subject"] == "staging: apply full ops patch (HNSW/metrics/backup/vault/e2e)"
    assert by_tag["committed_at"][:4].isdigit()
    assert "scripts/db_backup.sh" in by_tag["files_checked"]
    assert by_tag["repository"] == str(repo.resolve())

    by_branch = check_release(repo, "staging/ops-test")
    assert by_branch["commit"] == head and by_branch["ref_kind"] == "branch"
    by_sha = check_release(repo, head[:10])
    assert by_sha["commit"] == head and by_sha["ref_kind"] == "commit"


def test_unknown_ref_is_named(repo: Path):
    with pytest.raises(ReleaseCheckError) as err:
        check_release(repo, "staging/no-such-branch")
    assert "'staging/no-such-branch'" in str(err.value)
    assert "does not name a commit" in str(err.value)


def test_option_like_ref_is_refused(repo: Path):
    with pytest.raises(ReleaseCheckError, match="is not a branch, tag or commit name"):
        check_release(repo, "--all")


def test_missing_repository(tmp_path: Path):
    with pytest.raises(ReleaseCheckError, match="does not exist"):
        check_release(tmp_path / "nowhere", "main")
    with pytest.raises(ReleaseCheckError, match="is not a git repository"):
        check_release(tmp_path, "main")


def test_dirty_tree_names_a_few_paths(repo: Path):
    (repo / "README.md").write_text("edited\n")
    for i in range(7):
        (repo / f"untracked-{i}.txt").write_text("x\n")
    with pytest.raises(ReleaseCheckError) as err:
        check_release(repo, "rc1")
    message = str(err.value)
    assert "not clean: 8 uncommitted path(s)" in message
    assert "README.md" in message
    assert "(and 3 more)" in message  # only the first few are listed
    # A dirty tree is tolerated only when asked for.
    assert check_release(repo, "rc1", require_clean=False)["clean_checked"] is False


def test_missing_required_files_are_all_named(repo: Path):
    with pytest.raises(ReleaseCheckError) as err:
        check_release(repo, "main")  # the base commit, before the patch
    message = str(err.value)
    for path in PLAN_REQUIRED_PATHS:
        assert path in message
    with pytest.raises(ReleaseCheckError) as err:
        check_release(repo, "rc1", ["docs/", "scripts/rollback_staging.sh", "infra/README.md/"])
    message = str(err.value)
    assert "scripts/rollback_staging.sh" in message
    assert "infra/README.md/ (a file, not a directory)" in message
    assert "docs/," not in message and not message.endswith("docs/")


def test_merge_conflict_is_reported(repo: Path):
    git(repo, "checkout", "-q", "-b", "other", "main")
    (repo / "README.md").write_text("other\n")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "staging/ops-test")
    (repo / "README.md").write_text("ops\n")
    git(repo, "commit", "-q", "-am", "ops")
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=y", "merge", "other"],
                   capture_output=True, check=False)
    with pytest.raises(ReleaseCheckError, match=r"merge conflicts in 1 path\(s\): README.md"):
        check_release(repo, "HEAD")
