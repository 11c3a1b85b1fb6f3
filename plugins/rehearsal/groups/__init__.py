"""TaskGroup factories: one per phase, shared by the phase DAG and staging_rollout."""
