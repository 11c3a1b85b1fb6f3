"""Environment profiles: which staging environment a rehearsal runs against, and its thresholds.

A profile is a YAML file in include/environments/ (or REHEARSAL_PROFILE_DIR, or a path given
directly). It holds addresses, names, Airflow Connection ids and the plan's thresholds, never
credentials: those come from Airflow Connections (Vault in production).

Validation is strict: unknown keys, missing keys, wrong types and values the plan forbids (a
production bucket, say) all fail with one ProfileError naming the file and every bad field.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rehearsal.paths import ENVIRONMENTS_DIR
from rehearsal.work.release import PLAN_REQUIRED_PATHS

PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
# A bucket or path segment that says "prod" is production: the plan says never use those.
PRODUCTION_WORD = re.compile(r"(^|[^a-z0-9])(prod|production|prd)([^a-z0-9]|$)", re.IGNORECASE)
ENVIRONMENT_VARIABLE = "REHEARSAL_ENVIRONMENT"
PROFILE_DIR_VARIABLE = "REHEARSAL_PROFILE_DIR"


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the fields."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


ConnId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1)]
Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=63)]
Seconds = Annotated[float, Field(gt=0)]


class Command(Strict):
    """An argv list run without a shell; credentials are passed as environment variables."""

    argv: list[str] = Field(min_length=1)
    cwd: str | None = Field(None, description="relative paths are taken from the project root")
    timeout_seconds: Seconds = 300
    env: dict[str, str] = Field(default_factory=dict, description="extra non-secret variables")


class HnswSettings(Strict):
    m: int = Field(16, ge=2, le=100)
    ef_construction: int = Field(64, ge=4, le=1000)
    ef_search: int = Field(100, ge=1, le=1000)
    opclass: Literal["vector_cosine_ops", "vector_l2_ops", "vector_ip_ops"] = "vector_cosine_ops"

    @model_validator(mode="after")
    def _pgvector_limits(self) -> HnswSettings:
        if self.ef_construction < 2 * self.m:
            raise ValueError(f"ef_construction ({self.ef_construction}) must be at least 2 * m ({2 * self.m}): pgvector refuses less")
        return self


class VectorIndex(Strict):
    name: Identifier
    table: Identifier
    column: Identifier


DEFAULT_HNSW_INDEXES = (
    VectorIndex(name="identity_ai_embedding_idx", table="identity", column="ai_embedding"),
    VectorIndex(name="trust_event_ai_embedding_idx", table="trust_event", column="ai_embedding"),
)


class DatabaseSettings(Strict):
    conn_id: ConnId = Field(description="Airflow Connection of the application role")
    admin_conn_id: ConnId | None = Field(None, description="role allowed to CREATE EXTENSION; default conn_id")
    extension: Identifier = "vector"
    min_vector_version: str = Field("0.5.0", pattern=r"^\d+(\.\d+){0,2}$")
    embedding_dimension: int = Field(1536, ge=1, le=16000)
    tables: list[Identifier] = Field(default_factory=lambda: ["identity", "trust_event"], min_length=1)
    hnsw: HnswSettings = HnswSettings()
    hnsw_indexes: list[VectorIndex] = Field(default_factory=lambda: list(DEFAULT_HNSW_INDEXES))
    maintenance_work_mem: str = Field("512MB", pattern=r"^\d+\s*(kB|MB|GB)$")
    index_build_timeout_seconds: Seconds = 1800
    migrations: Command | None = Field(None, description="the application's migration command (the plan runs Prisma)")

    @property
    def extension_conn_id(self) -> str:
        return self.admin_conn_id or self.conn_id


class EvidenceSettings(Strict):
    conn_id: ConnId
    schema_name: Identifier = Field("rehearsal", alias="schema")


# The plan's STEP 1 `vault kv put` commands: the keys each path must hold.
PLAN_REQUIRED_SECRET_KEYS: dict[str, list[str]] = {
    "database": ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"],
    "backup": ["BACKUP_S3_BUCKET", "BACKUP_S3_PREFIX", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_DEFAULT_REGION"],
    "api": ["API_BASE_URL", "METRICS_PORT"],
    "worker": ["WORKER_BASE_URL", "METRICS_PORT"],
}
SecretKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class SecretsSettings(Strict):
    backend: Literal["vault", "local"]
    vault_conn_id: ConnId | None = None
    mount_point: str = Field("secret", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    paths: dict[str, str] = Field(min_length=1, description="logical name -> KV v2 path")
    required_keys: dict[str, list[SecretKey]] = Field(
        default_factory=lambda: {k: list(v) for k, v in PLAN_REQUIRED_SECRET_KEYS.items()},
        description="logical name -> keys that must exist and be non-empty (names, never values)")

    @model_validator(mode="after")
    def _staging_paths_only(self) -> SecretsSettings:
        if self.backend == "vault" and not self.vault_conn_id:
            raise ValueError("vault_conn_id is required when backend is 'vault'")
        for name, path in self.paths.items():
            if PRODUCTION_WORD.search(path):
                raise ValueError(f"paths.{name} = {path!r} looks like a production secret path")
        unknown = sorted(set(self.required_keys) - set(self.paths))
        if unknown:
            raise ValueError(f"required_keys names {', '.join(unknown)} but paths has no such entry")
        return self


class BackupSettings(Strict):
    s3_conn_id: ConnId
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field("database/backups", pattern=r"^[A-Za-z0-9._/-]*$")
    region: str = "us-east-1"

    @field_validator("bucket")
    @classmethod
    def _never_production(cls, bucket: str) -> str:
        if PRODUCTION_WORD.search(bucket):
            raise ValueError(f"bucket {bucket!r} looks like a production bucket; the plan forbids backing up staging there")
        return bucket


ServiceName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=40)]


class ReleaseSettings(Strict):
    """STEP 0: which commit is rehearsed. The deploy phase checks it out in `repository`."""

    repository: str = Field(description="git working tree the services are built and run from")
    ref: str = Field(min_length=1, description="branch, tag or commit of the candidate (Param release_ref overrides)")
    previous_ref: str | None = Field(None, description="the release a rollback returns to")
    required_paths: list[str] = Field(default_factory=lambda: list(PLAN_REQUIRED_PATHS))
    require_clean: bool = True


class DatabaseProbe(Strict):
    """How to tell a service reached the database: a URL answering 2xx, or a metric above zero."""

    url: str | None = Field(None, pattern=r"^https?://")
    metric: str | None = Field(None, description='a sample such as trustmath_runs_total{status="success"}')
    timeout_seconds: Seconds = 30

    @model_validator(mode="after")
    def _one_of(self) -> DatabaseProbe:
        if (self.url is None) == (self.metric is None):
            raise ValueError("give exactly one of url or metric")
        return self


class ServiceSettings(Strict):
    """STEP 3: one service of the release: build, start with its secrets, wait until it answers."""

    name: ServiceName
    build: Command | None = None
    start: Command = Field(description="argv run from the release repository; timeout = readiness deadline")
    secrets: dict[str, list[SecretKey]] = Field(
        default_factory=dict, description="secret name -> keys exported to the service's environment")
    ready_urls: list[Annotated[str, Field(pattern=r"^https?://")]] = Field(min_length=1)
    metrics_url: str | None = Field(None, pattern=r"^https?://")
    database: DatabaseProbe | None = None


class DeploySettings(Strict):
    run_dir: str = Field(description="pid files and service logs on the deploy host")
    services: list[ServiceSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> DeploySettings:
        names = [s.name for s in self.services]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"service names must be unique: {', '.join(duplicated)}")
        return self


class PrometheusSettings(Strict):
    url: str = Field(pattern=r"^https?://")
    jobs: list[str] = Field(min_length=1, description="scrape jobs whose targets must all be up")


class Thresholds(Strict):
    """The plan's STEP 6, 9, 10 and 11 limits."""

    e2e_failure_rate_max: float = Field(0.10, ge=0, le=1)
    lighthouse_performance_min: float = Field(0.8, ge=0, le=1)
    similarity_latency_max_seconds: Seconds = 2.0
    load_p95_max_seconds: Seconds = 2.0
    db_degradation_max: float = Field(0.20, ge=0)
    rollback_max_seconds: Seconds = 600


class Profile(Strict):
    name: str = Field(pattern=PROFILE_NAME.pattern)
    description: str = ""
    database: DatabaseSettings
    evidence: EvidenceSettings
    secrets: SecretsSettings
    backup: BackupSettings
    prometheus: PrometheusSettings
    release: ReleaseSettings
    deploy: DeploySettings
    thresholds: Thresholds = Thresholds()

    @model_validator(mode="after")
    def _service_secrets_exist(self) -> Profile:
        for service in self.deploy.services:
            for name in service.secrets:
                if name not in self.secrets.paths:
                    raise ValueError(f"deploy.services[{service.name}].secrets names {name!r}, "
                                     f"which is not in secrets.paths")
        return self

    def snapshot(self) -> dict[str, Any]:
        """JSON form handed between tasks through XCom (it holds no secrets)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Profile:
        return cls.model_validate(data)


# --------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a profile must not."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def profile_dirs() -> list[Path]:
    extra = os.environ.get(PROFILE_DIR_VARIABLE)
    return [Path(extra)] if extra else [ENVIRONMENTS_DIR]


def available_profiles() -> list[str]:
    return sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def resolve_profile_path(environment: str) -> Path:
    if not isinstance(environment, str) or not environment.strip():
        raise ProfileError("environment is empty: name a profile such as 'local' or 'staging'")
    if environment.endswith((".yaml", ".yml")) or "/" in environment:
        path = Path(environment).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
        return path
    if not PROFILE_NAME.match(environment):
        raise ProfileError(f"environment {environment!r} is not a profile name (lower-case letters, digits, - and _)")
    for folder in profile_dirs():
        path = folder / f"{environment}.yaml"
        if path.is_file():
            return path
    where = ", ".join(str(d) for d in profile_dirs())
    raise ProfileError(
        f"unknown environment {environment!r}: no {environment}.yaml in {where}; "
        f"available: {', '.join(available_profiles()) or 'none'}"
    )


def _describe(errors: list[dict[str, Any]]) -> list[str]:
    lines = []
    for err in errors:
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{field}: required key is missing")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"{field}: {err['msg'].removeprefix('Value error, ')}{shown}")
    return lines


_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, field: str, path: Path) -> Any:
    """Expand ${NAME} / ${NAME:-default} in string values, so one profile fits configurable ports.

    Only for addresses and names: credentials never belong in a profile, expanded or not.
    """
    if isinstance(value, dict):
        return {k: _expand(v, f"{field}.{k}" if field else str(k), path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{field}[{i}]", path) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ProfileError(f"profile {path}: {field}: environment variable {name} is not set and has no default")

    return _VARIABLE.sub(replace, value)


def load_profile(environment: str) -> Profile:
    """Load and validate a profile by name or path; raise ProfileError naming file and fields."""
    path = resolve_profile_path(environment)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path}: expected a mapping at the top level, got {type(data).__name__}")
    data = _expand(data, "", path)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc.errors())
        raise ProfileError(f"profile {path}: " + "; ".join(problems)) from None
    if path.stem != profile.name and not environment.endswith((".yaml", ".yml")) and "/" not in environment:
        raise ProfileError(f"profile {path}: name is {profile.name!r} but the file is {path.name}")
    return profile


def default_environment() -> str:
    """The trigger form's default: the deployment's REHEARSAL_ENVIRONMENT, else 'local'.

    The Airflow Variable rehearsal_environment counts too when it is set the way deployments set
    it, as AIRFLOW_VAR_REHEARSAL_ENVIRONMENT: DAG files are parsed often, so no metadata-DB read.
    """
    return (os.environ.get(ENVIRONMENT_VARIABLE) or os.environ.get("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT")
            or "local")
