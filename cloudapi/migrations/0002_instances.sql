-- The instances of the fleet: every one cloudapi placed (with its reservation and placement
-- decision) and every one a host reported (adopted). What a host reports of an instance (its
-- live state) stays in the host's inventory; this table holds what cloudapi decided and did.
CREATE TABLE instances (
    uuid TEXT PRIMARY KEY,
    alias TEXT NOT NULL,
    host_id TEXT NOT NULL,
    -- provisioning (placed, being created on the host), created (the host has it) or failed
    -- (the host refused it: it reserves nothing).
    phase TEXT NOT NULL,
    -- 1 when a host reported it and cloudapi did not create it: its alias may repeat one.
    adopted BIGINT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_mib BIGINT NOT NULL,
    image TEXT,
    -- The body for the agent's create (JSON).
    request TEXT NOT NULL,
    -- The placement decision (JSON).
    placement TEXT NOT NULL,
    -- What provisioning is doing, and why it failed.
    progress TEXT NOT NULL,
    error TEXT,
    -- The replica provisioning it, until when (another takes over after that).
    lease_owner TEXT,
    lease_until_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX instances_by_alias ON instances (alias) WHERE adopted = 0;
CREATE INDEX instances_by_host ON instances (host_id);
CREATE INDEX instances_by_lease ON instances (phase, lease_until_ms);
