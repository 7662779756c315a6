-- The hosts of the fleet: what each registered, and what its last heartbeat said.
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    -- The host's own credential: cloudapi calls the agent with it, the agent heartbeats with it.
    credential TEXT NOT NULL,
    -- running or draining; unknown is derived from heartbeat_ms.
    admin_state TEXT NOT NULL,
    hypervisor TEXT NOT NULL,
    tags TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_free_mib BIGINT NOT NULL,
    -- The last heartbeat's images and instances (JSON).
    inventory TEXT NOT NULL,
    registered_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX hosts_by_name ON hosts (name);
