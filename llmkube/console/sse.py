"""Server-sent events: the wire format, and a stream that sends a value whenever it changes."""

import asyncio
from collections.abc import AsyncIterator, Callable

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


def event(name: str, data: str) -> str:
    """One event; every line of `data` gets its own `data:` field, as the format requires."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


async def on_change(
    read: Callable[[], list[tuple[str, str]]], poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[str]:
    """Calls `read` (in a thread: it reads files or storage) every `poll_seconds` and sends each
    (event, data) whose data differs from what was sent last under that name. A comment line
    now and then keeps proxies from closing an idle stream."""
    sent: dict[str, str] = {}
    quiet = 0.0
    while True:
        for name, data in await asyncio.to_thread(read):
            if sent.get(name) != data:
                sent[name] = data
                quiet = 0.0
                yield event(name, data)
        if quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_seconds)
        quiet += poll_seconds
