"""``chat`` answers the agent's client-side function calls through the proxy's ``POST /function-call``.

The chat declares the built-in ``get_current_time`` in its Settings; when the agent sends a ``FunctionCallRequest``
for a client-side function, each call is posted to the same host and port as the WebSocket (same TLS, Origin and
client token, the token as ``?token=``), and the answer goes back as a ``FunctionCallResponse``. A failed call
answers the agent with the error text instead, so the conversation goes on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import h11
import trio

#: What the chat declares in Settings (``agent.think.functions``): the proxy's built-in.
DECLARED: list[dict[str, Any]] = [
    {
        "name": "get_current_time",
        "description": "The current date and time, optionally in an IANA time zone such as Europe/Paris.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "IANA time zone name"}},
            "required": [],
        },
    }
]
MAX_ANSWER_BYTES = 256 * 1024

OpenStream = Callable[[], Awaitable[trio.abc.Stream]]


async def post_call(
    open_stream: OpenStream, host: str, call: dict[str, Any], *, token: str | None = None, origin: str | None = None
) -> str:
    """One call -> the ``content`` to send back (or ``Error: ...`` when the endpoint answered an error)."""
    body = json.dumps(
        {"id": str(call.get("id", "")), "name": str(call.get("name", "")), "arguments": call.get("arguments") or "{}"}
    ).encode()
    target = "/function-call" + (f"?token={quote(token, safe='')}" if token else "")
    headers = [("Host", host), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if origin:
        headers.append(("Origin", origin))
    connection = h11.Connection(h11.CLIENT)
    stream = await open_stream()
    async with stream:
        await stream.send_all(connection.send(h11.Request(method="POST", target=target, headers=headers)) or b"")
        await stream.send_all(connection.send(h11.Data(data=body)) or b"")
        await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
        status, answer = 0, bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(16 * 1024)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
                if len(answer) > MAX_ANSWER_BYTES:
                    return "Error: the function's answer is too large"
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    try:
        decoded = json.loads(answer)
    except ValueError:
        return f"Error: the function endpoint answered HTTP {status}"
    if isinstance(decoded, dict) and isinstance(decoded.get("content"), str):
        return str(decoded["content"])
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return f"Error: {decoded['error']}"
    return f"Error: the function endpoint answered HTTP {status}"


def client_side_calls(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The calls of a ``FunctionCallRequest`` the client must answer."""
    calls = event.get("functions")
    if not isinstance(calls, list):
        return []
    return [c for c in calls if isinstance(c, dict) and c.get("client_side", True) is not False]


def response_message(call: dict[str, Any], content: str) -> str:
    return json.dumps(
        {"type": "FunctionCallResponse", "id": call.get("id"), "name": call.get("name"), "content": content}
    )
