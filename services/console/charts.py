"""Usage charts, drawn on the server as SVG: pure functions, no I/O.

The buckets are the metering service's own windows (`window_bounds`, the tenant's calendar),
so a bucket with no usage is drawn as zero instead of missing, and every drawn value is a point
of the usage series (`GET /v1/usage`) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.metering.service import window_bounds
from shared.times import local_midnight

# How many buckets each window shows, ending with the one holding today (or this hour).
SPANS = {"hour": 48, "day": 31, "month": 12}
WIDTH, HEIGHT, AXIS = 1000, 160, 30
PALETTE = ("#3867d6", "#20bf6b", "#f7b731", "#eb3b5a", "#8854d0", "#0fb9b1", "#fa8231")
TOTAL = "all"


def usage_range(window: str, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of the chart: the last SPANS[window] buckets of the tenant's calendar."""
    local = now.astimezone(zone)
    count = SPANS[window]
    if window == "hour":
        # Hours are counted in UTC: arithmetic on a local time is wall-clock arithmetic, and a
        # day with a clock change has 23 or 25 of them.
        hour = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        end = hour + timedelta(hours=1)
        return end - timedelta(hours=count), end
    today = local.date()
    if window == "day":
        return (local_midnight(today - timedelta(days=count - 1), zone),
                local_midnight(today + timedelta(days=1), zone))
    months = today.year * 12 + today.month - 1
    first = date((months - count + 1) // 12, (months - count + 1) % 12 + 1, 1)
    after = date((months + 1) // 12, (months + 1) % 12 + 1, 1)
    return local_midnight(first, zone), local_midnight(after, zone)


@dataclass(frozen=True, slots=True)
class Segment:
    series: str
    value: int | float
    y: float
    height: float
    color: str


@dataclass(frozen=True, slots=True)
class Bar:
    start: datetime
    end: datetime
    label: str
    x: float
    width: float
    total: int | float
    segments: list[Segment]


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    series: list[tuple[str, str]]  # (name, color), for the legend
    peak: int | float
    width: int = WIDTH
    height: int = HEIGHT + AXIS
    plot_height: int = HEIGHT


def _label(start: datetime, window: str) -> str:
    return {"hour": f"{start:%d %H}h", "day": f"{start:%d %b}",
            "month": f"{start:%b %Y}"}[window]


def usage_chart(points: list[dict[str, Any]], start: datetime, end: datetime, window: str,
                zone: ZoneInfo, group: str | None) -> Chart:
    """Stacked bars, one per bucket of [start, end), one segment per group value (a module)
    with usage in it; buckets without usage are bars of height zero."""
    values: dict[datetime, dict[str, int | float]] = {}
    for point in points:
        name = str(point["group"].get(group, TOTAL)) if group else TOTAL
        bucket = values.setdefault(datetime.fromisoformat(point["from"]), {})
        bucket[name] = bucket.get(name, 0) + point["value"]
    names = sorted({name for bucket in values.values() for name in bucket})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    bounds = window_bounds(start, end, window, zone)
    peak = max((sum(b.values()) for b in values.values()), default=0) or 1
    step = WIDTH / max(len(bounds), 1)
    bars = []
    for i, (lower, upper) in enumerate(bounds):
        bucket = values.get(lower, {})
        base = float(HEIGHT)
        segments = []
        for name in names:
            if name in bucket:
                height = HEIGHT * bucket[name] / peak
                base -= height
                segments.append(Segment(name, bucket[name], round(base, 2), round(height, 2),
                                        colors[name]))
        bars.append(Bar(lower.astimezone(zone), upper.astimezone(zone),
                        _label(lower.astimezone(zone), window), round(i * step, 2),
                        round(step * 0.8, 2), sum(bucket.values()), segments))
    return Chart(bars, list(colors.items()), peak)
