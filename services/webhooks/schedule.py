"""When a failed delivery is tried again, as pure functions (docs/webhooks.md, "Retries").

Times are µs of the platform clock. A delivery's window opens at its first attempt; after a
failed attempt the next one waits `first` seconds, doubled after each failure up to `cap`,
and never past the window's end, so the last attempt is made exactly as the window closes.
An attempt that fails once the window has closed marks the delivery failed.
"""

from __future__ import annotations

from dataclasses import dataclass

_SECOND_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: int
    cap_s: int
    window_h: int

    @property
    def window_us(self) -> int:
        return self.window_h * 3_600 * _SECOND_US

    def delay_us(self, failures: int) -> int:
        """The wait after the `failures`-th failed attempt in a row (1 for the first)."""
        # 2**40 seconds dwarfs any cap: the shift stays small whatever the count.
        doubled = self.first_s << min(failures - 1, 40)
        return min(doubled, self.cap_s) * _SECOND_US

    def next_attempt_us(self, window_start_us: int, now_us: int, failures: int) -> int | None:
        """When to try again after a failed attempt at `now_us`; None: give up (failed)."""
        closes = window_start_us + self.window_us
        if now_us >= closes:
            return None
        return min(now_us + self.delay_us(failures), closes)
