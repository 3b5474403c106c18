"""Handlers the function-call tests register with ``--function tests.server.function_handlers:NAME``."""

from __future__ import annotations

import threading
from typing import Any

import trio

from proxy.functions import FunctionError

#: Never set: a handler waiting on it blocks its thread until the process ends (the endpoint abandons it).
NEVER = threading.Event()


def echo(arguments: dict[str, Any]) -> str:
    return str(arguments.get("text", ""))


def as_json(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"seen": sorted(arguments)}


async def async_echo(arguments: dict[str, Any]) -> str:
    await trio.lowlevel.checkpoint()
    return "async " + str(arguments.get("text", ""))


def refuse(arguments: dict[str, Any]) -> str:
    raise FunctionError("not today")


def broken(arguments: dict[str, Any]) -> str:
    raise RuntimeError("secret-result-data")


def blocks(arguments: dict[str, Any]) -> str:
    NEVER.wait(5)
    return "late"


not_callable = 42
