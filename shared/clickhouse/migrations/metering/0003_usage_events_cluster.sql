-- The broker cluster a row was read from: a resume offset means something only within the
-- log that produced it, and an embedded broker starts a new log (and a new cluster id) at
-- every start. Rows written before this carry ''.
ALTER TABLE usage_events
    ADD COLUMN IF NOT EXISTS kafka_cluster LowCardinality(String) DEFAULT ''
    AFTER kafka_topic;
