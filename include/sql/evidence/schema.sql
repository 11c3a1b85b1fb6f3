-- The evidence store: one row per rehearsal, one row per checkpoint of that rehearsal.
-- {schema} is replaced by the profile's evidence.schema (a validated identifier).
-- Holds measured values and reasons only, never secrets (the writer scrubs them too).

CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.rehearsal (
  rehearsal_id  TEXT PRIMARY KEY,          -- "<dag_id>/<run_id>": shared by every phase of a run
  dag_id        TEXT NOT NULL,
  run_id        TEXT NOT NULL,
  environment   TEXT NOT NULL,
  profile       JSONB NOT NULL,            -- the validated profile the run used (thresholds included)
  started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at   TIMESTAMPTZ,
  outcome       TEXT                       -- set when the run closes; the decide phase sets GO / NO-GO
);

CREATE TABLE IF NOT EXISTS {schema}.evidence (
  rehearsal_id  TEXT NOT NULL REFERENCES {schema}.rehearsal ON DELETE CASCADE,
  phase         TEXT NOT NULL,
  check_id      TEXT NOT NULL,
  status        TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'warn', 'inconclusive')),
  value         JSONB,                     -- what was measured
  threshold     JSONB,                     -- what it was held against
  reason        TEXT NOT NULL,             -- a sentence a release engineer can act on
  started_at    TIMESTAMPTZ NOT NULL,
  finished_at   TIMESTAMPTZ NOT NULL,
  attempt       INTEGER NOT NULL DEFAULT 1,
  task_id       TEXT,
  PRIMARY KEY (rehearsal_id, phase, check_id)
);

CREATE INDEX IF NOT EXISTS evidence_check_history_idx ON {schema}.evidence (check_id, finished_at DESC);
