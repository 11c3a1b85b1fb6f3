"""STEP 1 secrets checkpoint: the real VaultHook/hvac against a KV v2 HTTP double, and the local source."""
from __future__ import annotations

import copy
import json
import logging
import re
import secrets as pysecrets
import socket
import uuid

import pytest
from werkzeug import Request, Response

from rehearsal import redaction
from rehearsal.profile import PLAN_REQUIRED_SECRET_KEYS, SecretsSettings, load_profile
from rehearsal.work.secrets import (
    KEY_EMPTY,
    KEY_MISSING,
    MISCONFIGURED,
    PATH_MISSING,
    PERMISSION_DENIED,
    UNREACHABLE,
    LocalSecretSource,
    SecretsCheckError,
    VaultSecretSource,
    check_profile_secrets,
    check_secrets,
    inspect_secrets,
    kv2_relative_path,
    read_secret_values,
)

PATHS = {
    "database": "secret/data/aura/staging/database",
    "backup": "secret/data/aura/staging/backup",
    "api": "secret/data/aura/staging/api",
    "worker": "secret/data/aura/staging/worker",
}
PORT_KEYS = {"PGPORT", "METRICS_PORT"}  # short numbers: may legitimately appear in a message


def plan_secrets() -> dict[str, dict[str, str]]:
    """The plan's STEP 1 secrets, with unique random values so a leak is unmistakable."""
    def r() -> str:
        return pysecrets.token_hex(8)

    return {
        "aura/staging/database": {"PGHOST": f"db-{r()}.aura", "PGPORT": "5432", "PGDATABASE": f"aura_{r()}",
                                  "PGUSER": f"user_{r()}", "PGPASSWORD": f"pw-{r()}"},
        "aura/staging/backup": {"BACKUP_S3_BUCKET": f"bucket-{r()}", "BACKUP_S3_PREFIX": f"database/{r()}",
                                "AWS_ACCESS_KEY_ID": f"AKIA{r()}", "AWS_SECRET_ACCESS_KEY": f"sk-{r()}",
                                "AWS_DEFAULT_REGION": f"region-{r()}"},
        "aura/staging/api": {"API_BASE_URL": f"https://api-{r()}.aura", "METRICS_PORT": "3000"},
        "aura/staging/worker": {"WORKER_BASE_URL": f"https://worker-{r()}.aura", "METRICS_PORT": "3001"},
    }


def leaked_values(data: dict[str, dict[str, str]]) -> list[str]:
    return [v for kv in data.values() for k, v in kv.items() if k not in PORT_KEYS and v]


class FakeVault:
    """A KV v2 engine mounted at secret/, token auth and AppRole login, in Vault's response shapes."""

    def __init__(self, token: str, data: dict[str, dict[str, str]]):
        self.token, self.data = token, data
        self.role_id, self.secret_id = "role-" + uuid.uuid4().hex, "sid-" + uuid.uuid4().hex
        self.requests: list[str] = []

    @staticmethod
    def _json(body: dict, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    def __call__(self, request: Request) -> Response:
        self.requests.append(f"{request.method} {request.path}")
        if request.path == "/v1/auth/approle/login" and request.method in ("POST", "PUT"):
            body = request.get_json(force=True)
            if body.get("role_id") != self.role_id or body.get("secret_id") != self.secret_id:
                return self._json({"errors": ["invalid role or secret ID"]}, 400)
            return self._json({"auth": {"client_token": self.token, "accessor": "a", "policies": ["default"],
                                        "lease_duration": 3600, "renewable": True}})
        if request.headers.get("X-Vault-Token") != self.token:
            return self._json({"errors": ["permission denied"]}, 403)
        prefix = "/v1/secret/data/"
        path = request.path[len(prefix):] if request.path.startswith(prefix) else None
        if request.method != "GET" or path not in self.data:
            return self._json({"errors": []}, 404)
        return self._json({
            "request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": {"data": self.data[path],
                     "metadata": {"created_time": "2026-01-02T03:04:05.000000Z", "custom_metadata": None,
                                  "deletion_time": "", "destroyed": False, "version": 3}},
            "wrap_info": None, "warnings": None, "auth": None,
        })


@pytest.fixture
def vault(httpserver, monkeypatch):
    """(FakeVault, conn_id): a token Connection pointing at the double, via AIRFLOW_CONN_<ID>."""
    fake = FakeVault("hvs." + pysecrets.token_hex(12), plan_secrets())
    httpserver.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(fake)
    conn_id = f"vault_test_{uuid.uuid4().hex[:8]}"  # unique: no Connection cache can mix tests up
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "vault", "host": httpserver.host, "port": httpserver.port, "password": fake.token,
        "extra": {"auth_type": "token", "kv_engine_version": 2}}))
    return fake, conn_id


def set_conn(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "vault", **fields}))


def kinds(summary: dict) -> list[tuple[str, str, str | None]]:
    return [(p["name"], p["kind"], p["key"]) for p in summary["problems"]]


# --- Vault -----------------------------------------------------------------------------------


def test_kv2_path_forms():
    assert kv2_relative_path("secret/data/aura/staging/database") == "aura/staging/database"
    assert kv2_relative_path("/secret/aura/staging/database/") == "aura/staging/database"
    assert kv2_relative_path("aura/staging/database") == "aura/staging/database"
    assert kv2_relative_path("kv/data/aura/x", "kv") == "aura/x"


def test_vault_all_present_passes(vault):
    fake, conn_id = vault
    summary = check_secrets(VaultSecretSource(conn_id, "secret"), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert summary["ok"] is True and summary["problems"] == []
    assert summary["counts"] == {"paths": 4, "paths_readable": 4, "keys_required": 14, "problems": 0}
    db = summary["paths"]["database"]
    assert db["keys_present"] == sorted(PLAN_REQUIRED_SECRET_KEYS["database"])
    assert db["metadata"]["version"] == 3
    # Really went through hvac's KV v2 API paths, with the mount stripped from the plan's form.
    assert "GET /v1/secret/data/aura/staging/database" in fake.requests
    # Every value read is known to the redactor; none is in the summary.
    password = fake.data["aura/staging/database"]["PGPASSWORD"]
    assert redaction.scrub(f"x {password} y") == "x *** y"
    text = json.dumps(summary)
    assert not [v for v in leaked_values(fake.data) if v in text]


def test_vault_both_path_forms_and_values_for_a_task(vault):
    fake, conn_id = vault
    source = VaultSecretSource(conn_id)
    short = {"database": "aura/staging/database", "api": "secret/aura/staging/api"}
    assert check_secrets(source, short, {"database": ["PGPASSWORD"], "api": ["API_BASE_URL"]})["ok"]
    env = read_secret_values(source, "secret/data/aura/staging/database", public_keys={"PGPORT"})
    assert env == fake.data["aura/staging/database"]


def test_vault_missing_path_is_404(vault):
    fake, conn_id = vault
    del fake.data["aura/staging/worker"]
    with pytest.raises(SecretsCheckError) as err:
        check_secrets(VaultSecretSource(conn_id), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert kinds(err.value.summary) == [("worker", PATH_MISSING, None)]
    assert "secret/data/aura/staging/worker does not exist (404)" in str(err.value)
    assert err.value.summary["counts"]["paths_readable"] == 3


def test_vault_missing_and_empty_keys(vault):
    fake, conn_id = vault
    del fake.data["aura/staging/database"]["PGPASSWORD"]
    fake.data["aura/staging/backup"]["AWS_SECRET_ACCESS_KEY"] = ""
    fake.data["aura/staging/api"]["METRICS_PORT"] = "   "
    summary = inspect_secrets(VaultSecretSource(conn_id), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert summary["ok"] is False
    assert kinds(summary) == [("database", KEY_MISSING, "PGPASSWORD"),
                              ("backup", KEY_EMPTY, "AWS_SECRET_ACCESS_KEY"),
                              ("api", KEY_EMPTY, "METRICS_PORT")]
    messages = [p["message"] for p in summary["problems"]]
    assert messages[0] == "database: key PGPASSWORD is missing at secret/data/aura/staging/database"
    assert messages[1] == "backup: key AWS_SECRET_ACCESS_KEY is empty at secret/data/aura/staging/backup"


def test_vault_wrong_token_is_permission_denied(vault, monkeypatch, httpserver):
    set_conn(monkeypatch, "vault_wrong_token", host=httpserver.host, port=httpserver.port,
             password="hvs.not-the-token", extra={"auth_type": "token", "kv_engine_version": 2})
    with pytest.raises(SecretsCheckError) as err:
        check_secrets(VaultSecretSource("vault_wrong_token"), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert {k for _, k, _ in kinds(err.value.summary)} == {PERMISSION_DENIED}
    assert "permission denied reading secret/data/aura/staging/database" in str(err.value)
    assert "hvs.not-the-token" not in str(err.value)


def test_vault_down_is_unreachable(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    set_conn(monkeypatch, "vault_down", host="127.0.0.1", port=port, password="hvs.x",
             extra={"auth_type": "token", "kv_engine_version": 2})
    summary = inspect_secrets(VaultSecretSource("vault_down", timeout=2), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    problems = summary["problems"]
    assert [p["kind"] for p in problems] == [UNREACHABLE] * 4
    assert f"Vault unreachable at http://127.0.0.1:{port}" in problems[0]["message"]
    # After the first failure the rest are reported, not retried against a dead server.
    assert "not checked" in problems[1]["message"]


def test_vault_connection_missing_is_misconfigured():
    summary = inspect_secrets(VaultSecretSource("no_such_vault_conn"), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert summary["problems"][0]["kind"] == MISCONFIGURED
    assert "no_such_vault_conn" in summary["problems"][0]["message"]


def test_vault_approle_login(vault, monkeypatch, httpserver):
    fake, _ = vault
    set_conn(monkeypatch, "vault_approle", host=httpserver.host, port=httpserver.port,
             login=fake.role_id, password=fake.secret_id, extra={"auth_type": "approle", "kv_engine_version": 2})
    assert check_secrets(VaultSecretSource("vault_approle"), PATHS, PLAN_REQUIRED_SECRET_KEYS)["ok"]
    assert fake.requests[0] == "POST /v1/auth/approle/login"


def test_no_secret_value_in_summary_messages_or_logs(vault, caplog, capfd):
    fake, conn_id = vault
    fake.data["aura/staging/database"]["PGPASSWORD"] = ""  # empty, and one missing: messages exist
    del fake.data["aura/staging/backup"]["AWS_ACCESS_KEY_ID"]
    values = leaked_values(fake.data)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SecretsCheckError) as err:
        check_secrets(VaultSecretSource(conn_id), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    out, errout = capfd.readouterr()
    surfaces = {"summary": json.dumps(err.value.summary), "message": str(err.value), "repr": repr(err.value),
                "logs": caplog.text, "stdout": out, "stderr": errout}
    leaks = {where: [v for v in values if v in text] for where, text in surfaces.items()}
    assert leaks == {where: [] for where in surfaces}
    assert len(err.value.problems) == 2


# --- local source ----------------------------------------------------------------------------


@pytest.fixture
def local_secrets(monkeypatch):
    data = {f"secret/data/{k}": v for k, v in plan_secrets().items()}  # the plan's path form
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS", json.dumps(data))
    return data


def test_local_all_present_passes(local_secrets):
    summary = check_secrets(LocalSecretSource(), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert summary["ok"] and summary["backend"] == "local"
    assert summary["counts"]["paths_readable"] == 4
    assert "rehearsal_local_secrets" in summary["source"]
    assert not [v for v in leaked_values(local_secrets) if v in json.dumps(summary)]
    assert redaction.contains_secret(local_secrets["secret/data/aura/staging/backup"]["AWS_SECRET_ACCESS_KEY"])


def test_local_profile_checkpoint(local_secrets):
    profile = load_profile("local")
    summary = check_profile_secrets(profile.secrets)
    assert summary["ok"] and summary["counts"]["keys_required"] == 14


def test_local_missing_path_key_and_empty_key(monkeypatch, local_secrets):
    data = copy.deepcopy(local_secrets)
    del data["secret/data/aura/staging/api"]
    del data["secret/data/aura/staging/database"]["PGUSER"]
    data["secret/data/aura/staging/worker"]["WORKER_BASE_URL"] = ""
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS", json.dumps(data))
    with pytest.raises(SecretsCheckError) as err:
        check_secrets(LocalSecretSource(), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert kinds(err.value.summary) == [("database", KEY_MISSING, "PGUSER"), ("api", PATH_MISSING, None),
                                        ("worker", KEY_EMPTY, "WORKER_BASE_URL")]
    assert not [v for v in leaked_values(data) if v in str(err.value)]


def test_local_variable_unset_or_not_json(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS", raising=False)
    summary = inspect_secrets(LocalSecretSource(), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert [p["kind"] for p in summary["problems"]] == [MISCONFIGURED] * 4
    assert "AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS" in summary["problems"][0]["message"]

    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS", '{"secret/data/aura/staging/api": {"PGPASSWORD": "hunter2-x"')
    with pytest.raises(SecretsCheckError) as err:
        check_secrets(LocalSecretSource(), PATHS, PLAN_REQUIRED_SECRET_KEYS)
    assert "is not valid JSON" in str(err.value) and "hunter2-x" not in str(err.value)


def test_required_keys_must_name_known_paths():
    with pytest.raises(ValueError, match="required_keys names cache but paths has no such entry"):
        SecretsSettings(backend="local", paths={"database": "secret/data/aura/staging/database"},
                        required_keys={"database": ["PGHOST"], "cache": ["REDIS_URL"]})
    settings = SecretsSettings(backend="local", paths=PATHS)
    assert settings.required_keys == PLAN_REQUIRED_SECRET_KEYS


def test_public_keys_are_not_registered_for_masking():
    data = {"aura/staging/api": {"API_BASE_URL": f"https://api-{uuid.uuid4().hex}.aura",
                                 "API_TOKEN": f"tok-{uuid.uuid4().hex}"}}
    source = LocalSecretSource(data=data)
    summary = check_secrets(source, {"api": "secret/data/aura/staging/api"}, {"api": ["API_BASE_URL"]},
                            public_keys={"API_BASE_URL"})
    assert summary["ok"] and summary["source"] == "in-memory secrets"
    assert not redaction.contains_secret(data["aura/staging/api"]["API_BASE_URL"])
    assert redaction.contains_secret(data["aura/staging/api"]["API_TOKEN"])


def test_staging_profile_checkpoint_reads_vault_through_the_hook(vault):
    """The production path end to end: the staging profile's secrets section, VaultHook, KV v2."""
    from rehearsal.evidence import CheckFailed
    from rehearsal.work import deploy

    fake, conn_id = vault
    settings = load_profile("staging").secrets.model_copy(update={"vault_conn_id": conn_id})
    result = deploy.check_secrets(settings)
    assert result.status == "pass" and "4/4 paths readable" in result.reason
    assert result.value["paths"]["database"]["metadata"]["version"] == 3
    assert "GET /v1/secret/data/aura/staging/database" in fake.requests
    fake.data.pop("aura/staging/backup")
    fake.data["aura/staging/api"]["METRICS_PORT"] = ""
    with pytest.raises(CheckFailed) as caught:
        deploy.check_secrets(settings)
    failed = caught.value.result
    assert "secret/data/aura/staging/backup" in failed.reason and "METRICS_PORT" in failed.reason
    evidence = json.dumps(failed.value) + failed.reason
    assert not [v for v in leaked_values(fake.data) if v in evidence]
