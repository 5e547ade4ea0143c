"""Named corruption levels shared by both families.

R-Bench reports every distortion at three strengths (low / mid / high) and Robust-R1 evaluates at
25 / 50 / 100 % synthetic degradation, i.e. intensity 0.23 / 0.45 / 0.9 of one random operation.
We tie the two scales together as follows (our choice, chosen so that each step is visibly
stronger in both families and "high" is the strongest preset of each):

=========  =================  ====================  =========================
level      ImageNet-C         Robust-R1 intensity   aliases
=========  =================  ====================  =========================
low        severity 1         0.23                  "25%"
mid        severity 3         0.45                  "50%", "medium"
high       severity 5         0.9                   "100%"
=========  =================  ====================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    """One named strength: its ImageNet-C severity, Robust-R1 intensity and degradation percent."""

    name: str
    severity: int
    intensity: float
    percent: int


LOW = Level("low", severity=1, intensity=0.23, percent=25)
MID = Level("mid", severity=3, intensity=0.45, percent=50)
HIGH = Level("high", severity=5, intensity=0.9, percent=100)
LEVELS: tuple[Level, ...] = (LOW, MID, HIGH)

_ALIASES: dict[str, Level] = {
    **{level.name: level for level in LEVELS},
    **{f"{level.percent}%": level for level in LEVELS},
    "medium": MID,
}


def parse_level(name: str) -> Level:
    """Look up a level by name ("low", "mid", "high", "medium") or percent ("25%", "50%", "100%").

    Example:
        >>> parse_level("50%").intensity
        0.45
    """
    level = _ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if level is None:
        raise ValueError(f"unknown level {name!r}; use one of {sorted(_ALIASES)}")
    return level


def level_for_percent(percent: int) -> Level:
    """Return the level of a Robust-R1 degradation percent (25, 50 or 100).

    Example:
        >>> level_for_percent(100).intensity
        0.9
    """
    for level in LEVELS:
        if level.percent == percent:
            return level
    raise ValueError(
        f"unknown degradation percent {percent!r}; use one of {[lv.percent for lv in LEVELS]}"
    )
