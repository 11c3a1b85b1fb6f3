"""Profiles: the shipped ones load; every kind of bad input gives one error naming file and field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rehearsal.paths import ENVIRONMENTS_DIR
from rehearsal.profile import Profile, ProfileError, available_profiles, load_profile


def test_shipped_profiles_load_with_the_plans_values():
    assert {"local", "staging"} <= set(available_profiles())
    staging = load_profile("staging")
    assert staging.backup.bucket == "aura-staging-backups"
    assert staging.secrets.paths["database"] == "secret/data/aura/staging/database"
    assert staging.database.hnsw.m == 16 and staging.database.hnsw.ef_construction == 64
    assert staging.database.hnsw.ef_search == 100
    assert staging.thresholds.e2e_failure_rate_max == 0.10
    assert staging.thresholds.lighthouse_performance_min == 0.8
    assert staging.prometheus.jobs == ["aura_api_staging", "trustmath_worker_staging"]
    assert load_profile("local").database.migrations.argv[-1] == "aura_target.migrate"


def test_snapshot_round_trips():
    profile = load_profile("local")
    assert Profile.from_snapshot(profile.snapshot()) == profile


def write_variant(tmp_path: Path, change, name: str = "variant") -> Path:
    data = yaml.safe_load((ENVIRONMENTS_DIR / "local.yaml").read_text())
    data["name"] = name
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_for(path: Path) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    return str(caught.value)


def test_missing_key_is_named(tmp_path):
    path = write_variant(tmp_path, lambda d: d["database"].pop("conn_id"))
    message = error_for(path)
    assert str(path) in message and "database.conn_id: required key is missing" in message


def test_wrong_type_is_named_with_the_value(tmp_path):
    path = write_variant(tmp_path, lambda d: d["database"]["hnsw"].update(m="sixteen"))
    message = error_for(path)
    assert "database.hnsw.m" in message and "'sixteen'" in message


def test_unknown_key_is_refused(tmp_path):
    path = write_variant(tmp_path, lambda d: d["database"].update(pasword="x"))
    assert "database.pasword: unknown key" in error_for(path)


def test_production_bucket_is_refused(tmp_path):
    path = write_variant(tmp_path, lambda d: d["backup"].update(bucket="aura-prod-backups"))
    message = error_for(path)
    assert "backup.bucket" in message and "production" in message


def test_production_secret_path_is_refused(tmp_path):
    path = write_variant(tmp_path, lambda d: d["secrets"]["paths"].update(database="secret/data/aura/production/database"))
    assert "production secret path" in error_for(path)


def test_hnsw_limits_of_pgvector(tmp_path):
    path = write_variant(tmp_path, lambda d: d["database"]["hnsw"].update(m=48, ef_construction=64))
    assert "ef_construction (64) must be at least 2 * m (96)" in error_for(path)


def test_every_problem_is_reported_at_once(tmp_path):
    def two_faults(d):
        d["database"].pop("conn_id")
        d["thresholds"]["e2e_failure_rate_max"] = 3
    message = error_for(write_variant(tmp_path, two_faults))
    assert "database.conn_id" in message and "thresholds.e2e_failure_rate_max" in message


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text((ENVIRONMENTS_DIR / "local.yaml").read_text().replace("name: local", "name: dup\nname: again"))
    assert "duplicate key 'name'" in error_for(path)


def test_invalid_yaml_and_non_mapping(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("database: [unclosed\n")
    assert "not valid YAML" in error_for(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- a\n- b\n")
    assert "expected a mapping" in error_for(listed)


def test_unknown_environment_lists_the_available_ones():
    with pytest.raises(ProfileError, match=r"unknown environment 'nope'.*available: .*local.*staging"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="not a profile name"):
        load_profile("Bad Name!")
    with pytest.raises(ProfileError, match="is empty"):
        load_profile("  ")


def test_name_must_match_the_file(tmp_path, monkeypatch):
    write_variant(tmp_path, lambda d: d.update(name="other"), name="mine")
    (tmp_path / "mine.yaml").write_text((tmp_path / "mine.yaml").read_text().replace("name: mine", "name: other"))
    monkeypatch.setenv("REHEARSAL_PROFILE_DIR", str(tmp_path))
    with pytest.raises(ProfileError, match="name is 'other' but the file is mine.yaml"):
        load_profile("mine")


def test_environment_variables_expand_and_a_missing_one_is_named(tmp_path, monkeypatch):
    path = write_variant(tmp_path, lambda d: d["prometheus"].update(url="${PROM_URL_FOR_TEST}"))
    monkeypatch.setenv("PROM_URL_FOR_TEST", "http://127.0.0.1:1234")
    assert load_profile(str(path)).prometheus.url == "http://127.0.0.1:1234"
    monkeypatch.delenv("PROM_URL_FOR_TEST")
    assert "prometheus.url: environment variable PROM_URL_FOR_TEST is not set" in error_for(path)


def test_default_environment_comes_from_the_deployment(monkeypatch):
    from rehearsal.profile import default_environment

    monkeypatch.delenv("REHEARSAL_ENVIRONMENT", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", raising=False)
    assert default_environment() == "local"
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", "staging")
    assert default_environment() == "staging"
    monkeypatch.setenv("REHEARSAL_ENVIRONMENT", "perf")
    assert default_environment() == "perf"
