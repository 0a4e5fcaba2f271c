-- Topic names are settings, so the resume point of a partition is per topic (R9.6 keeps it
-- in the provenance too). Rows written before this carry the default topic.
ALTER TABLE usage_events
    ADD COLUMN IF NOT EXISTS kafka_topic LowCardinality(String) DEFAULT 'usage-events'
    AFTER extensions;
