"""Reading a Server-Sent Events response as a client does (the HTML standard's parsing rules,
the parts this API uses: id, event, data, comments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None = None
    event: str = "message"
    data_lines: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads("\n".join(self.data_lines))


async def messages(
    response: httpx.Response, *, comments: list[str] | None = None
) -> AsyncIterator[Message]:
    """The stream's messages in order; comment lines (``: …``) are appended to ``comments``."""
    current = Message()
    async for line in response.aiter_lines():
        if line == "":
            if current.data_lines:
                yield current
            current = Message()
            continue
        if line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data_lines.append(value)
