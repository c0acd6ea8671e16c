"""A fixed mmap threshold gives freed large blocks back to the system."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from agents import malloc

# Large blocks freed after a larger one raised glibc's threshold, with small
# long-lived blocks between them (as changelog deltas and snapshot parts sit among
# tracked messages): how much of them stays resident after they are freed.
SCENARIO = textwrap.dedent(
    """
    import sys
    from agents.malloc import fix_mmap_threshold

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold()
    big = bytearray(4 << 20)
    del big  # an mmapped block freed: glibc raises its threshold to its size
    blocks, keep = [], []
    for _ in range(200):
        blocks.append(bytearray(512 << 10))
        keep.append(bytes(1000))  # malloc'd, and kept
    before = rss_mb()
    del blocks
    print(before - rss_mb())
    """
)


def given_back_mb(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_blocks_go_back_to_the_system_only_with_the_fixed_threshold() -> None:
    assert given_back_mb("dynamic") < 20  # 100 MB freed, kept resident
    assert given_back_mb("fixed") > 80


def test_the_operators_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert malloc.fix_mmap_threshold() is False
