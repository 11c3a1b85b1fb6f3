"""Secrets checkpoint (plan STEP 1): every staging secret path is readable and holds its keys.

One interface, two sources:
  * VaultSecretSource - KV v2 through the hashicorp provider's VaultHook (an Airflow Connection,
    token or AppRole auth). Used by the staging profile.
  * LocalSecretSource - the same {path: {key: value}} structure from one JSON Airflow Variable
    (`rehearsal_local_secrets`, i.e. env AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS). The local profile
    has no Vault server (none is installable here).

Nothing returned or raised here carries a secret value: summaries and messages name paths and
keys only, and every value read is registered with rehearsal.redaction (Airflow masks it too).
"""
from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rehearsal.redaction import register_secret, scrub

LOCAL_SECRETS_VARIABLE = "rehearsal_local_secrets"
# Plan keys that are configuration, not credentials. Not applied by default: pass them as
# `public_keys` to keep ports, regions and URLs readable in evidence instead of masked as ***.
PLAN_PUBLIC_KEYS = frozenset({"PGPORT", "METRICS_PORT", "AWS_DEFAULT_REGION", "API_BASE_URL",
                              "WORKER_BASE_URL", "BACKUP_S3_PREFIX"})
DEFAULT_MOUNT_POINT = "secret"
VAULT_TIMEOUT_SECONDS = 10.0

# Problem kinds, from the worst (nothing can be read) to the narrowest (one key).
UNREACHABLE = "unreachable"            # Vault down / connection refused / timeout / sealed
MISCONFIGURED = "misconfigured"        # no such Connection, Variable missing or not JSON, ...
PERMISSION_DENIED = "permission_denied"  # 401/403: wrong or expired token, policy forbids the path
PATH_MISSING = "path_missing"          # 404
KEY_MISSING = "key_missing"
KEY_EMPTY = "key_empty"
ERROR = "error"                        # any other Vault answer (500, ...)


class SecretReadError(Exception):
    """One path could not be read; `kind` is one of the problem kinds above."""

    def __init__(self, kind: str, path: str, message: str):
        self.kind, self.path = kind, path
        super().__init__(message)


@dataclass(frozen=True)
class SecretRecord:
    values: dict[str, str] = field(repr=False)  # never printed, not even by a debugger's repr
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-able, value-free (version, times)


class SecretSource(Protocol):
    backend: str

    def describe(self) -> str: ...

    def read(self, path: str) -> SecretRecord:
        """Return the secret at `path` or raise SecretReadError."""


def kv2_relative_path(path: str, mount_point: str = DEFAULT_MOUNT_POINT) -> str:
    """`secret/data/aura/staging/database`, `secret/aura/staging/database` -> `aura/staging/database`.

    The plan writes API paths (<mount>/data/<path>); hvac wants the path inside the mount.
    """
    clean = path.strip().strip("/")
    mount = mount_point.strip("/")
    for prefix in (f"{mount}/data/", f"{mount}/"):
        if clean.startswith(prefix):
            return clean[len(prefix):]
    return clean


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


class VaultSecretSource:
    """KV v2 secrets through VaultHook; the Connection decides the address and the auth method."""

    backend = "vault"

    def __init__(self, vault_conn_id: str, mount_point: str = DEFAULT_MOUNT_POINT,
                 timeout: float = VAULT_TIMEOUT_SECONDS):
        self.vault_conn_id = vault_conn_id
        self.mount_point = mount_point.strip("/")
        self.timeout = timeout
        self._hook = None

    def describe(self) -> str:
        return f"vault connection {self.vault_conn_id!r}, mount {self.mount_point!r}"

    def _get_hook(self, path: str):
        if self._hook is None:
            # Imported here: the provider costs seconds to import and needs Airflow configured.
            from airflow.providers.hashicorp.hooks.vault import VaultHook

            try:
                hook = VaultHook(vault_conn_id=self.vault_conn_id, kv_engine_version=2, timeout=self.timeout)
            except Exception as exc:  # noqa: BLE001 - missing Connection, bad auth_type/extras: all mean misconfigured
                raise SecretReadError(MISCONFIGURED, path, f"cannot use Vault connection {self.vault_conn_id!r}: "
                                      f"{type(exc).__name__}: {scrub(str(exc))}") from None
            # VaultHook takes the mount from the Connection's schema; the profile's mount wins.
            hook.vault_client.mount_point = self.mount_point
            self._hook = hook
        return self._hook

    def read(self, path: str) -> SecretRecord:
        import requests
        from hvac import exceptions as hvac_errors

        relative = kv2_relative_path(path, self.mount_point)
        hook = self._get_hook(path)
        where = f"{self.mount_point}/data/{relative}"
        try:
            response = hook.get_secret_including_metadata(secret_path=relative)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise SecretReadError(UNREACHABLE, path, f"Vault unreachable at {hook.vault_client.url} "
                                  f"({type(exc).__name__}) reading {where}") from None
        except hvac_errors.VaultDown:
            raise SecretReadError(UNREACHABLE, path, f"Vault at {hook.vault_client.url} is sealed or down "
                                  f"(503) reading {where}") from None
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
            raise SecretReadError(PERMISSION_DENIED, path, f"permission denied reading {where}: "
                                  "the token is wrong or expired, or its policy does not allow this path") from None
        except hvac_errors.VaultError as exc:
            # VaultHook re-authenticates once on 403 and then raises a bare VaultError from Forbidden.
            if isinstance(exc.__cause__, (hvac_errors.Forbidden, hvac_errors.Unauthorized)) or \
                    "Authentication Error" in str(exc):
                raise SecretReadError(PERMISSION_DENIED, path, f"permission denied reading {where}: "
                                      "the token is wrong or expired, or its policy does not allow this path") from None
            raise SecretReadError(ERROR, path, f"Vault error reading {where}: {type(exc).__name__}: "
                                  f"{scrub(str(exc))[:200]}") from None
        if response is None:  # the hook turns 404 (InvalidPath) into None
            raise SecretReadError(PATH_MISSING, path, f"secret path {where} does not exist (404)")
        body = response.get("data") or {}
        values = {str(k): _as_text(v) for k, v in (body.get("data") or {}).items()}
        meta = body.get("metadata") or {}
        metadata = {k: meta.get(k) for k in ("version", "created_time", "deletion_time", "destroyed") if k in meta}
        return SecretRecord(values=values, metadata=metadata)


class LocalSecretSource:
    """The same {path: {key: value}} structure, from one JSON Airflow Variable (or given directly).

    Paths may be written in either form (`secret/data/aura/staging/api` or `aura/staging/api`).
    """

    backend = "local"

    def __init__(self, variable: str = LOCAL_SECRETS_VARIABLE, data: Mapping[str, Mapping[str, Any]] | None = None,
                 mount_point: str = DEFAULT_MOUNT_POINT):
        self.variable = variable
        self.mount_point = mount_point
        self._from_variable = data is None
        self._data = None if data is None else self._index(data)

    def describe(self) -> str:
        return f"Airflow Variable {self.variable!r}" if self._from_variable else "in-memory secrets"

    def _index(self, data: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(data, Mapping) or not all(isinstance(v, Mapping) for v in data.values()):
            raise SecretReadError(MISCONFIGURED, "*", f"{self.describe()} must be a JSON object "
                                  "{path: {key: value}}")
        return {kv2_relative_path(str(p), self.mount_point): dict(v) for p, v in data.items()}

    def _raw(self) -> str | None:
        env_name = f"AIRFLOW_VAR_{self.variable.upper()}"
        try:
            from airflow.sdk import Variable
        except ImportError:  # plain-function use without Airflow
            return os.environ.get(env_name)
        try:
            return Variable.get(self.variable, default=None)
        except Exception:  # noqa: BLE001 - outside a task with no API server/DB reachable: the env var still counts
            return os.environ.get(env_name)

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            raw = self._raw()
            if raw is None or not str(raw).strip():
                raise SecretReadError(MISCONFIGURED, "*", f"Airflow Variable {self.variable!r} is not set "
                                      f"(env AIRFLOW_VAR_{self.variable.upper()})")
            try:
                parsed = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError:
                # The text is not echoed: it is made of secrets.
                raise SecretReadError(MISCONFIGURED, "*", f"Airflow Variable {self.variable!r} is not valid JSON") from None
            self._data = self._index(parsed)
        return self._data

    def read(self, path: str) -> SecretRecord:
        data = self._load()
        relative = kv2_relative_path(path, self.mount_point)
        if relative not in data:
            raise SecretReadError(PATH_MISSING, path, f"secret path {path} is not in {self.describe()}")
        return SecretRecord(values={str(k): _as_text(v) for k, v in data[relative].items()},
                            metadata={"source": self.describe()})


def source_from_settings(settings: Any) -> SecretSource:
    """The source a profile's `secrets:` section asks for (a rehearsal.profile.SecretsSettings)."""
    if settings.backend == "vault":
        return VaultSecretSource(settings.vault_conn_id, settings.mount_point)
    return LocalSecretSource(mount_point=settings.mount_point)


def read_secret_values(source: SecretSource, path: str, *, public_keys: Collection[str] = ()) -> dict[str, str]:
    """Values at `path` for use inside a task (a service's env), registered for redaction first.

    Never return this from a task: XCom and evidence get the summary of check_secrets instead.
    `public_keys` (ports, regions, URLs...) are left unregistered so they are not masked everywhere.
    """
    record = source.read(path)
    for key, value in record.values.items():
        if key not in public_keys:
            register_secret(value)
    return dict(record.values)


@dataclass
class SecretProblem:
    name: str
    path: str
    kind: str
    message: str
    key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "kind": self.kind, "key": self.key, "message": self.message}


class SecretsCheckError(RuntimeError):
    """The checkpoint failed; `problems` and `summary` are value-free and JSON-able."""

    def __init__(self, summary: dict[str, Any]):
        self.summary = summary
        self.problems = summary["problems"]
        lines = [p["message"] for p in self.problems]
        super().__init__(f"secrets checkpoint failed ({len(lines)} problem(s)): " + "; ".join(lines))


def inspect_secrets(source: SecretSource, paths: Mapping[str, str],
                    required_keys: Mapping[str, Collection[str]] | None = None,
                    *, public_keys: Collection[str] = ()) -> dict[str, Any]:
    """Read every path, check its required keys; return a value-free summary (never raises on a finding).

    Every value read is registered with rehearsal.redaction, except `public_keys`.
    """
    required_keys = required_keys or {}
    problems: list[SecretProblem] = []
    per_path: dict[str, dict[str, Any]] = {}
    stop: SecretReadError | None = None  # a source-wide failure: do not hammer a dead Vault per path
    for name, path in paths.items():
        wanted = list(required_keys.get(name, ()))
        entry: dict[str, Any] = {"path": path, "readable": False, "keys_required": wanted,
                                 "keys_present": [], "key_count": 0}
        per_path[name] = entry
        if stop is not None:
            entry["not_checked"] = f"{stop.kind}: see the first problem"
            problems.append(SecretProblem(name, path, stop.kind, f"{name} ({path}): not checked, {stop.kind}"))
            continue
        try:
            record = source.read(path)
        except SecretReadError as exc:
            problems.append(SecretProblem(name, path, exc.kind, f"{name}: {exc}"))
            if exc.kind in (UNREACHABLE, MISCONFIGURED):
                stop = exc
            continue
        for key, value in record.values.items():
            if key not in public_keys:
                register_secret(value)
        entry.update(readable=True, keys_present=sorted(record.values), key_count=len(record.values),
                     metadata=record.metadata)
        for key in wanted:
            if key not in record.values:
                problems.append(SecretProblem(name, path, KEY_MISSING, f"{name}: key {key} is missing at {path}", key))
            elif not record.values[key].strip():
                problems.append(SecretProblem(name, path, KEY_EMPTY, f"{name}: key {key} is empty at {path}", key))
    summary = {
        "backend": source.backend,
        "source": source.describe(),
        "ok": not problems,
        "paths": per_path,
        "problems": [p.as_dict() for p in problems],
        "counts": {
            "paths": len(per_path),
            "paths_readable": sum(1 for e in per_path.values() if e["readable"]),
            "keys_required": sum(len(e["keys_required"]) for e in per_path.values()),
            "problems": len(problems),
        },
    }
    # Messages are built from names only (Vault error texts are scrubbed where caught); scrubbing the
    # whole summary again would garble path names that happen to contain a short value.
    return summary


def check_secrets(source: SecretSource, paths: Mapping[str, str],
                  required_keys: Mapping[str, Collection[str]] | None = None,
                  *, public_keys: Collection[str] = ()) -> dict[str, Any]:
    """inspect_secrets, raising SecretsCheckError (carrying the summary) if anything is wrong."""
    summary = inspect_secrets(source, paths, required_keys, public_keys=public_keys)
    if not summary["ok"]:
        raise SecretsCheckError(summary)
    return summary


def check_profile_secrets(settings: Any, *, public_keys: Collection[str] = ()) -> dict[str, Any]:
    """The STEP 1 checkpoint for a profile's `secrets:` section (paths + required_keys)."""
    return check_secrets(source_from_settings(settings), settings.paths, settings.required_keys,
                         public_keys=public_keys)
