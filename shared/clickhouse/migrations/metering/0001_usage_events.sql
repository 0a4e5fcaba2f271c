-- Every accepted usage event, once (see docs/metering.md, "Exactly once").
-- Append-only: no figure depends on a merge. Ordered for the per-tenant queries of the usage
-- API and of billing; partitioned by month of event time so late events land in their month.
-- `kafka_*` is the provenance of R9.6 and where the consumer resumes after a crash.
-- `non_replicated_deduplication_window` lets a retried insert with the same
-- insert_deduplication_token be a no-op.
CREATE TABLE IF NOT EXISTS usage_events (
    tenant String,
    type LowCardinality(String),
    time DateTime64(6, 'UTC'),
    source String,
    id String,
    module LowCardinality(String) DEFAULT '',
    user_id String DEFAULT '',
    data String,
    extensions String DEFAULT '{}',
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC'),
    stored_at DateTime64(6, 'UTC') DEFAULT now64(6),
    INDEX idx_stored_at stored_at TYPE minmax GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, type, time, source, id)
SETTINGS non_replicated_deduplication_window = 1000;
