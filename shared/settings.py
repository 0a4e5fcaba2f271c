"""Settings read from the environment, one class per service over a common base.

The variable names are the public ones of docs/api.md ("Running it"): `KAFKA_BOOTSTRAP`,
`CLICKHOUSE_DSN`, `REDIS_URL`, `ADMIN_API_KEY`, `CLOCK`, `CLOCK_START`, `CATALOG`, `DATA_DIR`,
`PORT`. Left empty, the three endpoints are filled in by the embedded stack (shared.stack).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, FilePath, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.legal import LegalName, PostalAddress, VatId
from shared.times import is_zone_name, zone

USAGE_EVENTS_TOPIC = "usage-events"
USAGE_EVENTS_DLQ_TOPIC = "usage-events.dlq"
SUBSCRIPTION_EVENTS_DLQ_TOPIC = "subscription-events.dlq"
SUBSCRIPTION_EVENTS_TOPIC = "subscription-events"
_DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    kafka_bootstrap: str = ""
    clickhouse_dsn: str = ""
    redis_url: str = ""
    # Idempotent producers need a broker that supports them; the embedded tansu does not.
    kafka_enable_idempotence: bool = False
    kafka_session_timeout_ms: int = Field(default=10_000, ge=500)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    # The topics of docs/events.md; other names let several platforms share one cluster.
    usage_events_topic: str = USAGE_EVENTS_TOPIC
    usage_events_dlq_topic: str = USAGE_EVENTS_DLQ_TOPIC
    subscription_events_topic: str = SUBSCRIPTION_EVENTS_TOPIC
    subscription_events_dlq_topic: str = SUBSCRIPTION_EVENTS_DLQ_TOPIC
    usage_events_partitions: int = Field(default=4, ge=1)
    subscription_events_partitions: int = Field(default=4, ge=1)
    # How long a published outbox event is kept to be published again should the broker
    # turn out to be a new, empty one (the embedded broker after a restart): shared/outbox.py.
    outbox_retention_s: int = Field(default=86_400, ge=0, le=30 * 86_400)

    # The catalog (R1) entitlements sells from and invoicing prices with: one file (one
    # version), or a directory of version files (R10.5, shared.catalog_versions). The default
    # is the demo's first version alone; `make run` and the image serve the demo directory.
    catalog: Path = _DEPLOY / "catalog" / "2026-11.yaml"
    # Meters declared by configuration (YAML or JSON), on top of the built-in ones: metering
    # aggregates them, the catalog's usage charges may price them (R10.1). The demo file
    # declares the meter the demo catalog prices.
    meters: Path | None = _DEPLOY / "meters.demo.yaml"
    # Invoicing owns its Redis keys under this prefix; entitlements reads the number of the
    # immediate invoice of a purchase there (docs/invoicing.md, "Redis layout").
    invoicing_key_prefix: str = Field(default="inv", pattern=r"^[a-z0-9_-]{1,32}$")
    # Entitlements owns the tenant documents under this Redis prefix; invoicing reads them.
    entitlements_key_prefix: str = Field(default="ent", pattern=r"^[a-z0-9_-]{1,32}$")

    admin_api_key: str = ""
    clock: Literal["wall", "manual"] = "wall"
    clock_start: datetime | None = None
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    # One JSON line per request on `meterbill.access`; off spares the check's hot path.
    access_log: bool = True
    # Seconds between scheduler ticks under the wall clock.
    scheduler_tick_s: float = Field(default=1.0, gt=0)
    # The longest single move of the manual clock: every due job on the way runs in that
    # call, so a longer span would hold the scheduler (and the caller) for minutes.
    clock_max_step_days: int = Field(default=1_100, ge=1, le=36_500)
    # Consumers retry a dependency outage with back-off from the first delay to the last.
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    # Dead letters in a row after which a consumer stops (and /readyz says so) rather than
    # dead-letter a whole stream that some fault of ours makes look bad.
    dead_letter_limit: int = Field(default=1_000, ge=1)
    # A consumer loop with no poll and no retried step for this long is reported stalled on
    # /readyz (hung on an answer that never comes); a rebuild of the live counters after a
    # broker change must fit in it.
    loop_stall_after_s: float = Field(default=300.0, gt=0)


class MeteringSettings(CommonSettings):
    consumer_group: str = "metering"
    batch_max_records: int = Field(default=5_000, ge=1, le=100_000)
    batch_max_wait_ms: int = Field(default=200, ge=1)
    max_event_bytes: int = Field(default=64 * 1024, ge=1024)
    max_request_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=10_000, ge=1)
    # How long Redis remembers which message claimed an event id; older events are checked
    # against ClickHouse instead (docs/metering.md, "Exactly once").
    dedupe_window_days: int = Field(default=35, ge=2)
    # When `POST /v1/events` answers 202: once the broker acked the events (`broker`: enough
    # for a replicated Kafka), or once metering stored them (`stored`: the embedded broker
    # forgets everything on a restart; `make run` chooses it). docs/metering.md.
    ingest_ack: Literal["stored", "broker"] = "broker"
    # With `stored`, how long a request waits before answering 503 (its events count once
    # when sent again).
    ingest_ack_timeout_s: float = Field(default=30.0, gt=0)


class EntitlementsSettings(CommonSettings):
    # Drain the outbox to `subscription-events` in this process (off: another replica does).
    entitlements_outbox_publisher: bool = True
    # Seconds between outbox polls when nothing woke the publisher (other replicas' writes).
    entitlements_outbox_poll_s: float = Field(default=0.5, gt=0)
    # Seconds between looks at the meters whose usage moved, for thresholds (R10.4).
    entitlements_threshold_poll_s: float = Field(default=0.2, gt=0)
    # How long an Idempotency-Key answer is kept (seconds of wall time).
    entitlements_idempotency_ttl_s: int = Field(default=7 * 86_400, ge=60)
    # The largest quantity one purchase may name; more is refused as absurd.
    entitlements_max_quantity: int = Field(default=10_000, ge=1)
    # How long a confirmed purchase waits for invoicing to number its immediate invoice
    # (R9.2) so the answer can name it; 0 answers `"invoice": null` at once.
    entitlements_invoice_wait_s: float = Field(default=2.0, ge=0)
    # At most this many decisions in one POST /v1/check.
    entitlements_max_batch: int = Field(default=5_000, ge=1)


class ConsoleSettings(CommonSettings):
    # How long a console sign-in lasts (seconds); signing in again starts a new session.
    console_session_ttl_s: int = Field(default=8 * 3_600, ge=60, le=30 * 86_400)


class InvoicingSettings(CommonSettings):
    # Consumer group reading `subscription-events` (immediate invoices, R9.2).
    invoicing_consumer_group: str = "invoicing"
    # Run the subscription-events consumer in this process.
    invoicing_consumer: bool = True
    # Publish invoicing's outbox (`invoice.issued`, `credit_note.issued`) from this process
    # (off: another replica does), polling it this often when nothing woke the publisher.
    invoicing_outbox_publisher: bool = True
    invoicing_outbox_poll_s: float = Field(default=0.5, gt=0)
    # Tenants billed per batch of a billing run (one ClickHouse insert per batch).
    invoicing_batch_tenants: int = Field(default=1_000, ge=1, le=100_000)
    # How long the clock barrier waits for subscription-events to be consumed.
    invoicing_barrier_timeout_s: float = Field(default=15.0, gt=0)
    # How long a credit note's Idempotency-Key answer is kept (seconds of wall time).
    invoicing_idempotency_ttl_s: int = Field(default=7 * 86_400, ge=60)
    # A ClickHouse database of its own for invoices, lines and credit notes (empty: the
    # default one, where the migrations put them); lets test platforms share one engine.
    invoicing_clickhouse_database: str = Field(default="", pattern=r"^[A-Za-z0-9_]{0,64}$")
    # The zone whose calendar years number documents and whose months `month=` and the
    # export select (R9.3): ACCOUNTING_TZ, an IANA zone.
    accounting_tz: str = "UTC"
    # The seller every invoice and credit note names (R9.8): the operator's legal identity,
    # copied into each document as it is issued, so a later change leaves issued ones as
    # they are. The defaults name the demo company.
    invoicing_seller_legal_name: LegalName = "Meterbill Demo SAS"
    invoicing_seller_address: PostalAddress = "1 rue de la Démo, 75001 Paris, France"
    invoicing_seller_vat_id: VatId = "FR00123456789"
    # Days from an invoice's issue date (in the accounting zone) to its due date (R9.8).
    invoicing_payment_terms_days: int = Field(default=30, ge=0, le=365)
    # The Typst template invoices and credit notes are printed with as PDF (R9.8); unset, the
    # one shipped in services/invoicing/templates. A vendor's own names a file here.
    invoicing_document_template: FilePath | None = None

    @field_validator("accounting_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not is_zone_name(value):
            raise ValueError(f"'{value[:64]}' is not an IANA time zone such as 'Europe/Paris'")
        return value

    @property
    def accounting_zone(self) -> ZoneInfo:
        return zone(self.accounting_tz)


class WebhooksSettings(CommonSettings):
    """Webhook endpoints and their deliveries (docs/webhooks.md)."""

    # Webhooks own their Redis keys under this prefix (shared.keys).
    webhooks_key_prefix: str = Field(default="wh", pattern=r"^[a-z0-9_-]{1,32}$")
    # Consumer group reading `subscription-events` into deliveries.
    webhooks_consumer_group: str = "webhooks"
    # Run the consumer and the delivery loop in this process (off: API only).
    webhooks_worker: bool = True
    # Local development only: accept `http://` URLs, and loopback addresses, for endpoints
    # on this machine (`make run`'s demo turns it on). Off, an endpoint is `https://` to a
    # public address.
    webhooks_allow_http_loopback: bool = False
    # How long one delivery attempt may take, connection to last byte read (wall seconds).
    webhooks_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Back-off between attempts: the first delay, doubled after each failure up to the cap
    # (seconds of the platform clock).
    webhooks_retry_first_s: int = Field(default=5, ge=1, le=3_600)
    webhooks_retry_cap_s: int = Field(default=3_600, ge=1, le=86_400)
    # How long a delivery is retried from its first attempt before it is marked failed
    # (hours of the platform clock; never less than a day).
    webhooks_retry_window_h: int = Field(default=24, ge=24, le=24 * 30)
    # Deliveries in flight at once: per endpoint (its tenants' queues), and in all.
    webhooks_endpoint_concurrency: int = Field(default=4, ge=1, le=64)
    webhooks_concurrency: int = Field(default=64, ge=1, le=1_024)
    # At most this many endpoints, each listing at most `webhooks_max_events` event types.
    webhooks_max_endpoints: int = Field(default=100, ge=1, le=10_000)
    # Finished deliveries kept in each endpoint's log (older ones are forgotten).
    webhooks_log_size: int = Field(default=1_000, ge=10, le=100_000)
    # Seconds between looks at the due deliveries when nothing woke the delivery loop.
    webhooks_poll_s: float = Field(default=0.2, gt=0, le=10)
