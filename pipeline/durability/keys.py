"""The changelog key scheme, once: every record of partition p's state in the
window-state table. The letter says what the record is; the partition follows, so
a partition's records are found by prefix (a colon ends the number: "d:1:" is not
a prefix of "d:10:")."""

from __future__ import annotations


def delta(p: int, seq: int) -> bytes:
    """A batch's accepted rows (zero-padded, so keys sort by sequence)."""
    return f"d:{p}:{seq:012d}".encode()


def deltas(p: int) -> bytes:
    """The prefix of every delta of partition p."""
    return f"d:{p}:".encode()


def marker(p: int) -> bytes:
    """The close decision and what is durable: watermark, outbox parts, snapshots."""
    return f"m:{p}".encode()


def outbox(p: int, i: int) -> bytes:
    """Part i of the outputs of a close, written before they are published."""
    return f"o:{p}:{i}".encode()


def detector(p: int, account: str) -> bytes:
    """An account's detector state."""
    return f"x:{p}:{account}".encode()


def detectors(p: int) -> bytes:
    """The prefix of every detector record of partition p."""
    return f"x:{p}:".encode()


def detector_account(p: int, key: bytes) -> str:
    """The account a detector key of partition p is about."""
    return key[len(detectors(p)) :].decode()


def snapshot(p: int, gen: int, i: int) -> bytes:
    """Part i of generation `gen` of the response-state snapshot."""
    return f"r:{p}:{gen}:{i}".encode()
