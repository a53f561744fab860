"""How the pages write numbers, times and durations (Jinja2 filters)."""

MISSING = "\N{EN DASH}"
"""What a table shows for a value that is not there."""


def number(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"


def when(timestamp: str) -> str:
    """An RFC 3339 time as `2026-11-30 13:02:58` (UTC, as Kubernetes reports times)."""
    return timestamp.replace("T", " ").removesuffix("+00:00").removesuffix("Z")


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `42s`; a dash for none."""
    if seconds is None:
        return MISSING
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
