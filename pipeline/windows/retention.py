"""Durability of a partition's state: restoring it from changelog records, the
marker record, and forgetting (tombstoning) what can no longer matter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.model import wire
from pipeline.windows.dedup import BUCKET_MS
from pipeline.windows.state import AggregatorConfig, Delta, PartitionState, dedup_key


class Retention:
    """Mixed into `Aggregator`: restore replays deltas through its `_apply_row`."""

    cfg: AggregatorConfig

    def _apply_row(self, state: PartitionState, row: wire.Row, late: bool) -> int:
        raise NotImplementedError

    @staticmethod
    def _add_followers(state: PartitionState, account: str, channel: str, ts: int, n: int) -> None:
        raise NotImplementedError

    def restore(
        self, state: PartitionState, deltas: Iterable[Delta], marker: Mapping[str, Any]
    ) -> None:
        """Rebuild a partition's state from its marker and retained deltas (any order)."""
        state.emitted_through_ms = marker.get("emitted_through_ms")
        state.cooldowns = dict(marker.get("cooldowns", {}))
        state.early = dict(marker.get("early", {}))
        wm = state.watermark
        wm.floor_ms = marker.get("watermark_ms")
        # Followers levels whose deltas may have been pruned (see `marker`)
        for account, channel, ts, n in marker.get("followers", ()):
            self._add_followers(state, account, channel, ts, n)
        for d in sorted(deltas, key=lambda d: d.seq):
            late = set(d.late_idx)
            for i, row in enumerate(d.rows):
                ts = wire.row_ts(row)
                state.dedup.add(dedup_key(row), ts)
                self._apply_row(state, row, i in late)
            for row in d.too_late:  # for dedup only: no window counts them
                state.dedup.add(dedup_key(row), wire.row_ts(row))
            state.applied_offset = max(state.applied_offset, d.offset)
            state.seq = max(state.seq, d.seq)
            state.deltas.append((d.seq, d.max_window_end_ms, d.max_ts_ms))
            if wm.max_event_ms is None or d.max_ts_ms > wm.max_event_ms:
                wm.max_event_ms = d.max_ts_ms
        state.seq = max(state.seq, int(marker.get("seq", 0)))
        state.applied_offset = max(state.applied_offset, int(marker.get("applied_offset", -1)))

    def marker(self, state: PartitionState) -> dict[str, Any]:
        """The partition's small durable facts besides deltas."""
        return {
            "emitted_through_ms": state.emitted_through_ms,
            "watermark_ms": state.watermark.floor_ms,
            "cooldowns": state.cooldowns,
            "early": state.early,
            "seq": state.seq,
            "applied_offset": state.applied_offset,
            "followers": self._followers_before_cutoff(state),
            "responses": [
                state.responses.snap_gen,
                state.responses.snap_parts,
                state.responses.snap_seq,
            ],
        }

    def _followers_before_cutoff(self, state: PartitionState) -> list[list[Any]]:
        """Per account x channel, the last followers level before the prune cutoff: prune
        keeps it in memory but may tombstone the delta it came from."""
        cutoff = self._cutoff(state)
        if cutoff is None:
            return []
        out: list[list[Any]] = []
        for (account, channel), hist in state.followers.items():
            last = None
            for entry in hist:  # sorted by event time
                if entry[0] >= cutoff:
                    break
                last = entry
            if last is not None:
                out.append([account, channel, last[0], last[1]])
        return out

    # -- bounding -------------------------------------------------------------
    def _cutoff(self, state: PartitionState) -> int | None:
        """Event time before which nothing can matter any more: a horizon behind what is
        both watermarked and published (windows final but not yet published still need
        their rows' ids and their followers level)."""
        wm, emitted = state.watermark.floor_ms, state.emitted_through_ms
        if wm is None:
            return None
        return (wm if emitted is None else min(wm, emitted)) - self.cfg.horizon_ms

    def prune(self, state: PartitionState) -> list[int]:
        """Forget what can no longer matter; return seqs of deltas to tombstone."""
        emitted = state.emitted_through_ms
        cutoff = self._cutoff(state)
        if cutoff is None or emitted is None:
            return []
        # Windows still to be evaluated start after this; a cooldown that ended before
        # it can no longer silence anything.
        earliest_start = emitted - self.cfg.grace_ms - max(self.cfg.sizes_ms)
        for key in [
            k
            for k, end in state.cooldowns.items()
            if end + self.cfg.max_cooldown_ms < earliest_start
        ]:
            del state.cooldowns[key]
        state.dedup.forget(cutoff, self.cfg.max_ids)
        for hist in state.followers.values():
            # keep the last level before the cutoff: open windows may still need it
            i = 0
            while i + 1 < len(hist) and hist[i + 1][0] < cutoff:
                i += 1
            if i:
                del hist[:i]
        dead: list[int] = []
        deltas = state.deltas
        snapshotted = state.responses.snap_seq  # response state needs the rest
        while deltas and self._done_with(state, deltas[0]) and deltas[0][0] <= snapshotted:
            dead.append(deltas.popleft()[0])
        return dead

    def _done_with(self, state: PartitionState, delta: tuple[int, int, int]) -> bool:
        """Whether windows and dedup need a retained delta no more."""
        cutoff, emitted = self._cutoff(state), state.emitted_through_ms
        if cutoff is None or emitted is None:
            return False
        # dedup forgets a minute of event time at a time: a delta goes with its ids
        return delta[1] + self.cfg.grace_ms <= emitted and delta[2] < cutoff - cutoff % BUCKET_MS

    def needs_snapshot(self, state: PartitionState) -> bool:
        """Whether deltas are kept only because response state has no snapshot of them."""
        deltas = state.deltas
        return (
            bool(deltas)
            and deltas[0][0] > state.responses.snap_seq
            and self._done_with(state, deltas[0])
        )
