"""Settings of the spike/drop detectors: the `[detection]` table.

[detection]
window_s = 300                 # the window size the detectors read
series = ["engagement", "mentions"]   # default: all of SERIES
spike_ratio = 1.5              # any DetectorSettings field: a default for all accounts
[detection.accounts.brand_x]   # per-account overrides of the same fields
spike_ratio = 2.0
[detection.competitors]        # share of voice: account -> its competitors
brand_x = ["rival_a", "rival_b"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.detection.detector import DOWN, FIELDS, UP, DetectorSettings

# series -> (alert type up, alert type down, metric, what it counts)
SERIES: dict[str, tuple[str, str, str]] = {
    "engagement": ("engagement_spike", "engagement_drop", "weighted_engagement"),
    "engagement_rate": ("engagement_spike", "engagement_drop", "engagement_rate"),
    "mentions": ("mention_surge", "mention_surge", "count.mention"),
    "negative_share": (
        "negative_sentiment_shift",
        "negative_sentiment_shift",
        "negative_share",
    ),
    "share_of_voice": ("share_of_voice_drop", "share_of_voice_drop", "share_of_voice"),
}
# Kinds of series: count-like volumes (square root, volume floors), rates (judged
# in logs) and shares or other levels (as they are).
KINDS: dict[str, dict[str, Any]] = {
    "count": {},
    "rate": {"transform": "log", "scale_floor": 0.05},
    "share": {"transform": "share", "scale_floor": 0.02},
}
# What each series is: its kind, and the directions that matter for it.
_SERIES_DEFAULTS: dict[str, dict[str, Any]] = {
    "engagement": KINDS["count"],
    "engagement_rate": KINDS["rate"],
    "mentions": {**KINDS["count"], "directions": (UP,)},
    "negative_share": {**KINDS["share"], "directions": (UP,)},
    "share_of_voice": {**KINDS["share"], "directions": (DOWN,)},
}
_FLOATS = {f.name for f in fields(DetectorSettings) if f.type in ("float", float)}
_INTS = {f.name for f in fields(DetectorSettings) if f.type in ("int", int)}
TRANSFORMS = ("count", "log", "share")


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    window_s: int = 300
    series: tuple[str, ...] = tuple(SERIES)
    # Rate and share series skip windows with fewer events than this behind them.
    min_events: int = 5
    # Sentiment at or below this counts as negative.
    negative_below: float = -0.25
    # An account with no final window for this long (event time) is forgotten.
    forget_after_s: int = 7 * 86_400
    defaults: Mapping[str, Any] = field(default_factory=dict)
    accounts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    competitors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def homes(self) -> dict[str, str]:
        """competitor -> brand: the key that places a competitor's events, so share of
        voice sees the brand and its competitors in one partition."""
        return {r: brand for brand, rivals in self.competitors.items() for r in rivals}

    def settings_for_kind(self, kind: str) -> DetectorSettings:
        """A series of `kind` (count, rate or share) judged both ways, as the worker
        judges its series of that kind: for `engagement backtest --series`."""
        return DetectorSettings(**{**KINDS[kind], **self.defaults})

    def settings_for(self, account: str | None, series: str) -> DetectorSettings:
        values = {**_SERIES_DEFAULTS[series], **self.defaults}
        if account is not None:
            values.update(self.accounts.get(account, {}))
        return DetectorSettings(**values)


def _detector_values(path: str, raw: Mapping[str, Any], problems: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in raw.items():
        where = f"{path}.{key}"
        if key not in FIELDS:
            problems.append((where, "unknown key"))
        elif key == "transform":
            if v not in TRANSFORMS:
                problems.append((where, f"must be one of {', '.join(TRANSFORMS)}"))
            else:
                out[key] = v
        elif key == "directions":
            if not isinstance(v, list) or not v or any(d not in (UP, DOWN) for d in v):
                problems.append((where, f"must be a list of '{UP}' and/or '{DOWN}'"))
            else:
                out[key] = tuple(v)
        elif key in _INTS:
            if type(v) is not int or v < 0:
                problems.append((where, "must be a non-negative integer"))
            else:
                out[key] = v
        elif type(v) not in (int, float) or v < 0:
            problems.append((where, "must be a non-negative number"))
        else:
            out[key] = float(v)
    for key in ("level_alpha", "season_alpha", "scale_alpha"):
        if key in out and not 0 < out[key] < 1:
            problems.append((f"{path}.{key}", "must be in (0, 1)"))
    for key in ("week_alpha", "burst_alpha"):  # 0 turns them off
        if key in out and not 0 <= out[key] < 1:
            problems.append((f"{path}.{key}", "must be in [0, 1)"))
    for key in ("scale_floor", "history_days", "min_history_days", "history_floor", "range_days"):
        if key in out and out[key] <= 0:  # a zero would divide by zero or keep every day
            problems.append((f"{path}.{key}", "must be positive"))
    return out


def parse(raw: Any, problems: list[tuple[str, str]]) -> DetectionSettings | None:
    """DetectionSettings from the `[detection]` table (None: the defaults); None when
    there were problems, which are appended."""
    if raw is None:
        return DetectionSettings()
    if not isinstance(raw, dict):
        problems.append(("detection", "must be a table"))
        return None
    before = len(problems)
    raw = dict(raw)
    values: dict[str, Any] = {}
    for key in ("window_s", "min_events", "forget_after_s"):
        if key in raw:
            v = raw.pop(key)
            if type(v) is not int or v <= 0:
                problems.append((f"detection.{key}", "must be a positive integer"))
            else:
                values[key] = v
    if "negative_below" in raw:
        v = raw.pop("negative_below")
        if type(v) not in (int, float) or not -1 <= v <= 1:
            problems.append(("detection.negative_below", "must be a number in [-1, 1]"))
        else:
            values["negative_below"] = float(v)
    if "series" in raw:
        v = raw.pop("series")
        if not isinstance(v, list) or any(s not in SERIES for s in v):
            problems.append(("detection.series", f"must be a list of {', '.join(SERIES)}"))
        else:
            values["series"] = tuple(v)
    accounts = raw.pop("accounts", {})
    if not isinstance(accounts, dict) or not all(isinstance(t, dict) for t in accounts.values()):
        problems.append(("detection.accounts", "must be a table of account tables"))
    else:
        values["accounts"] = {
            a: _detector_values(f"detection.accounts.{a}", t, problems) for a, t in accounts.items()
        }
    comp = raw.pop("competitors", {})
    if not isinstance(comp, dict) or not all(
        isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in comp.values()
    ):
        problems.append(("detection.competitors", "must be a table of account = [accounts]"))
    else:
        values["competitors"] = {a: tuple(v) for a, v in comp.items()}
        seen: dict[str, str] = {}
        for brand, rivals in comp.items():
            for member in (brand, *rivals):
                if member in seen and seen[member] != brand:
                    problems.append(
                        (
                            f"detection.competitors.{brand}",
                            f"'{member}' is already in the set of '{seen[member]}': "
                            "an account may be in one competitor set",
                        )
                    )
                seen.setdefault(member, brand)
    values["defaults"] = _detector_values("detection", raw, problems)
    if len(problems) > before:
        return None
    return DetectionSettings(**values)
