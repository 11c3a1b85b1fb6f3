-- The application's tables (plan STEP 2.3). Idempotent: IF NOT EXISTS everywhere.
-- The HNSW indexes and hnsw.ef_search are not here: the init-db phase builds and checks them
-- itself (CREATE INDEX CONCURRENTLY, validity and options), so the table never loses its index.
-- gen_random_uuid() is core PostgreSQL since 13.

CREATE TABLE IF NOT EXISTS identity (
  address       VARCHAR(42) PRIMARY KEY,
  ai_embedding  vector(1536),
  created_at    TIMESTAMP DEFAULT NOW(),
  updated_at    TIMESTAMP DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS trust_event (
  id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  from_address  VARCHAR(42) NOT NULL,
  to_address    VARCHAR(42) NOT NULL,
  trust_score   FLOAT NOT NULL,
  ai_embedding  vector(1536),
  event_type    VARCHAR(50) NOT NULL,
  created_at    TIMESTAMP DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS trust_event_from_address_idx ON trust_event(from_address);
CREATE INDEX IF NOT EXISTS trust_event_to_address_idx ON trust_event(to_address);
