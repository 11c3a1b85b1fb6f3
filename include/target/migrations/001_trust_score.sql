-- Scores computed by the TrustMath worker from trust_event.
CREATE TABLE IF NOT EXISTS trust_score (
  address      VARCHAR(42) PRIMARY KEY,
  score        DOUBLE PRECISION NOT NULL,
  computed_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
