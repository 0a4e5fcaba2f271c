-- Invoices, their lines and credit notes (docs/invoicing.md). Append-only: an issued
-- invoice never changes (R9.3). Every insert carries the document number as its
-- insert_deduplication_token, and every read keeps one row per number (`LIMIT 1 BY`), so
-- the recovery step re-inserting a pending invoice after a crash can never double it.
CREATE TABLE IF NOT EXISTS invoices (
    number String,
    tenant String,
    kind LowCardinality(String),
    issued_at DateTime64(6, 'UTC'),
    billing_date Nullable(Date32),
    period_from Nullable(Date32),
    period_to Nullable(Date32),
    currency LowCardinality(String),
    subtotal Decimal(38, 6),
    tax Decimal(38, 6),
    total Decimal(38, 6),
    usage_cutoff DateTime64(6, 'UTC'),
    doc String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(issued_at)
ORDER BY (issued_at, number)
SETTINGS non_replicated_deduplication_window = 1000;
CREATE TABLE IF NOT EXISTS invoice_lines (
    number String,
    tenant String,
    issued_at DateTime64(6, 'UTC'),
    line_no UInt32,
    module Nullable(String),
    kind LowCardinality(String),
    description String,
    quantity Decimal(38, 9),
    unit_price Decimal(38, 9),
    amount Decimal(38, 6),
    period_from Nullable(Date32),
    period_to Nullable(Date32),
    meter String DEFAULT '',
    source String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(issued_at)
ORDER BY (tenant, number, line_no)
SETTINGS non_replicated_deduplication_window = 1000;
CREATE TABLE IF NOT EXISTS credit_notes (
    number String,
    invoice String,
    tenant String,
    issued_at DateTime64(6, 'UTC'),
    amount Decimal(38, 6),
    doc String
) ENGINE = MergeTree
ORDER BY (invoice, number)
SETTINGS non_replicated_deduplication_window = 1000;
