-- What placement reads, kept apart so that a placement does not parse every host's whole
-- inventory: the images each host holds, and an index that covers the reservation sums.
ALTER TABLE hosts ADD COLUMN images TEXT NOT NULL DEFAULT '[]';
CREATE INDEX instances_reserving ON instances (phase, host_id, vcpus, memory_mib, disk_mib);
-- The state the host gave in its last answer about the instance (its create, an action),
-- shown until a heartbeat reports it: a create is seen running without waiting for one.
ALTER TABLE instances ADD COLUMN state TEXT;
ALTER TABLE instances ADD COLUMN state_ms BIGINT;
