-- What the instances placed on each host reserve, kept on the host's row and changed in the
-- same transaction as every instance change, so that a placement reads one row per host
-- instead of summing every instance: vCPUs and memory of every instance that is not failed,
-- disk of those still being created (the host's free space already counts the others).
ALTER TABLE hosts ADD COLUMN reserved_vcpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN reserved_memory_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN reserved_disk_mib BIGINT NOT NULL DEFAULT 0;
UPDATE hosts SET
    reserved_vcpus = COALESCE((SELECT SUM(vcpus) FROM instances WHERE instances.host_id = hosts.id AND phase <> 'failed'), 0),
    reserved_memory_mib = COALESCE((SELECT SUM(memory_mib) FROM instances WHERE instances.host_id = hosts.id AND phase <> 'failed'), 0),
    reserved_disk_mib = COALESCE((SELECT SUM(disk_mib) FROM instances WHERE instances.host_id = hosts.id AND phase = 'provisioning'), 0);
DROP INDEX instances_reserving;
