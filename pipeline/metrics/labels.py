"""Bounded account labels for metrics: configured accounts, plus the top N others
by volume; every other account is reported as "other"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OTHER = "other"


class AccountLabels:
    """Volume is tracked with a Misra-Gries summary of `10 * top_n` counters, so
    memory stays bounded however many accounts appear. The labeled set changes
    only on `refresh()`, which returns accounts that lost their label (so their
    series can be removed and cardinality stays at configured + top_n + 1)."""

    def __init__(self, configured: Iterable[str], top_n: int) -> None:
        self.configured = frozenset(configured)
        self.top_n = top_n
        self.capacity = max(10 * top_n, 1)
        self.counts: dict[str, int] = {}
        self.top: frozenset[str] = frozenset()

    def label(self, account: str) -> str:
        if account in self.configured or account in self.top:
            return account
        return OTHER

    def has_own(self, account: str) -> bool:
        """The account has its own label (configured, or in the top at the last refresh):
        series that describe one account are exported only for these."""
        return account in self.configured or account in self.top

    def observe(self, volumes: Mapping[str, int]) -> None:
        counts = self.counts
        for account, n in volumes.items():
            if account in self.configured:
                continue
            if account in counts or len(counts) < self.capacity:
                counts[account] = counts.get(account, 0) + n
                continue
            # Misra-Gries: decrement all by the smallest, evict zeros.
            dec = min(n, min(counts.values()))
            for a in list(counts):
                counts[a] -= dec
                if counts[a] <= 0:
                    del counts[a]
            if n > dec:
                counts[account] = n - dec

    def refresh(self) -> list[str]:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        new_top = frozenset(a for a, _ in ranked[: self.top_n])
        dropped = sorted(self.top - new_top)
        self.top = new_top
        return dropped
