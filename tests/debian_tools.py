"""Tools the tests run from Debian's packages (Prometheus, Alertmanager): found on
PATH, or installed with apt-get when missing and allowed (root), under a lock so
that parallel test processes install a package once. None when it cannot be had;
the caller skips with one line (`make prometheus-tools` / `alertmanager-tools` do
the same install for `make test`)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def _find(binaries: tuple[str, ...]) -> str | None:
    for name in binaries:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_tool(binaries: tuple[str, ...], package: str) -> str | None:
    """The path of the first of `binaries` found, installing `package` if needed."""
    found = _find(binaries)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        lock_path = Path(tempfile.gettempdir()) / f"engagement-{package}-install.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _find(binaries) is None:
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                for cmd in (
                    ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                ):
                    subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
        found = _find(binaries)
    return found
