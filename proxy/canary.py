"""``python -m proxy canary``: prove that a deployed proxy answers one whole conversation, step by step.

It connects to ``--url`` (``/openai`` or ``/deepgram-proxy``), sends ``Settings`` and waits for ``SettingsApplied``,
then sends one ``InjectUserMessage`` and waits for the assistant's ``ConversationText``, agent audio (binary
frames) and ``AgentAudioDone``. Each step is printed with its latency; the exit status says which kind of failure
ended the run (:class:`Outcome`), so a scheduler or a synthetic monitor can alert on it without parsing text.

The rules about what a correct conversation looks like live in :class:`CanaryCheck`, which does no I/O and is fed
the messages and the time; :func:`run` is the thin Trio shell around it. A client token is sent as the ``token``
query parameter (the form the component uses) and is never printed.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import ssl
import sys
from dataclasses import dataclass
from typing import Final, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from .chat import settings_message

DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_TEXT: Final = "Say hello in one short sentence."
#: The environment variable the token may come from instead of ``--token`` (a command line is visible to every
#: user of the machine; a CronJob takes it from a Secret this way).
TOKEN_VARIABLE: Final = "PROXY_CANARY_TOKEN"
#: Messages longer than this are refused by the canary (the proxy's own frame limit is smaller).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class Outcome(enum.IntEnum):
    """Exit statuses. 2 is also what a usage error (a wrong flag) gives, as for every command of the proxy."""

    PASSED = 0
    USAGE = 2
    UNREACHABLE = 3  # refused, name not resolved, TLS failed: nothing answered the WebSocket upgrade
    UNAUTHORIZED = 4  # the upgrade was answered 401 or 403: a missing or wrong token, or an Origin not allowed
    REJECTED = 5  # the upgrade was answered with another status (404: wrong path; 503: full or draining)
    TIMEOUT = 6  # a step did not complete within --timeout
    ERROR_MESSAGE = 7  # the proxy sent an Error message
    WRONG_ORDER = 8  # messages came in an order the contract does not allow
    CLOSED = 9  # the connection closed before the conversation finished


class Step(enum.Enum):
    CONNECT = "connect"
    SETTINGS_APPLIED = "SettingsApplied"
    CONVERSATION_TEXT = "ConversationText"
    AGENT_AUDIO = "agent audio"
    AGENT_AUDIO_DONE = "AgentAudioDone"


#: The steps that complete the reply to the injected message, in the order they are reported when pending.
REPLY_STEPS: Final = (Step.CONVERSATION_TEXT, Step.AGENT_AUDIO, Step.AGENT_AUDIO_DONE)


class CanaryFailure(Exception):
    """Ends the run: the step that failed, the exit status, and one sentence for the operator."""

    def __init__(self, step: Step, outcome: Outcome, sentence: str) -> None:
        super().__init__(sentence)
        self.step = step
        self.outcome = outcome
        self.sentence = sentence


@dataclass(frozen=True, slots=True)
class StepDone:
    step: Step
    latency_s: float
    detail: str = ""


class CanaryCheck:
    """The conversation's rules, without I/O: feed it what arrives, it says which steps completed.

    Allowed: anything the contract does not name (``Welcome``, ``History``, ``UserStartedSpeaking``...) at any time,
    the user's own ``ConversationText`` echo, and the three parts of the reply in any order between themselves,
    except that ``AgentAudioDone`` must follow agent audio. Not allowed: reply messages or audio before
    ``SettingsApplied``, ``AgentAudioDone`` before any audio, and any ``Error``.
    """

    def __init__(self) -> None:
        self._settings_sent_at: float | None = None
        self._inject_sent_at: float | None = None
        self.done: dict[Step, StepDone] = {}

    def connected(self, started_at: float, now: float) -> StepDone:
        return self._complete(Step.CONNECT, now - started_at)

    def settings_sent(self, now: float) -> None:
        self._settings_sent_at = now

    def inject_sent(self, now: float) -> None:
        self._inject_sent_at = now

    @property
    def applied(self) -> bool:
        return Step.SETTINGS_APPLIED in self.done

    @property
    def finished(self) -> bool:
        return all(step in self.done for step in REPLY_STEPS)

    def pending(self) -> Step:
        """The step the run is waiting for (named when it times out or the connection closes)."""
        for step in (Step.CONNECT, Step.SETTINGS_APPLIED, *REPLY_STEPS):
            if step not in self.done:
                return step
        return Step.AGENT_AUDIO_DONE

    def received(self, message: str | bytes, now: float) -> StepDone | None:
        """One message from the proxy; returns the step it completed, if any, or raises :class:`CanaryFailure`."""
        if isinstance(message, bytes) and message[:1] != b"{":
            return self._audio(len(message), now)
        try:
            event = json.loads(message)
        except ValueError:
            if isinstance(message, bytes):
                # Audio whose first sample has 0x7B ("{") as its low byte: common in speech, so not an error.
                return self._audio(len(message), now)
            raise CanaryFailure(
                self.pending(), Outcome.WRONG_ORDER, "the proxy sent a text frame that is not JSON"
            ) from None
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "Error":
            description = str(event.get("description", ""))[:200]
            code = str(event.get("code", ""))[:64]
            raise CanaryFailure(self.pending(), Outcome.ERROR_MESSAGE, f"the proxy sent Error {code!r}: {description}")
        if kind == "SettingsApplied":
            if self.applied or self._settings_sent_at is None:
                return None  # a repeated SettingsApplied is allowed (one per Settings)
            return self._complete(Step.SETTINGS_APPLIED, now - self._settings_sent_at)
        if kind == "ConversationText" and isinstance(event, dict) and event.get("role") == "assistant":
            if self._inject_sent_at is None:
                raise CanaryFailure(
                    Step.SETTINGS_APPLIED,
                    Outcome.WRONG_ORDER,
                    "an assistant ConversationText came before SettingsApplied",
                )
            if Step.CONVERSATION_TEXT in self.done:
                return None
            content = str(event.get("content", ""))
            return self._complete(Step.CONVERSATION_TEXT, now - self._inject_sent_at, _quote(content))
        if kind == "AgentAudioDone":
            if self._inject_sent_at is None:
                return None  # the end of a greeting: the agent may speak one before the canary asks anything
            if Step.AGENT_AUDIO not in self.done:
                raise CanaryFailure(Step.AGENT_AUDIO, Outcome.WRONG_ORDER, "AgentAudioDone came before any agent audio")
            if Step.AGENT_AUDIO_DONE in self.done:
                return None
            return self._complete(Step.AGENT_AUDIO_DONE, now - self._inject_sent_at)
        return None

    def _audio(self, size: int, now: float) -> StepDone | None:
        if self._inject_sent_at is None:
            raise CanaryFailure(Step.SETTINGS_APPLIED, Outcome.WRONG_ORDER, "agent audio came before SettingsApplied")
        if Step.AGENT_AUDIO in self.done:
            return None
        return self._complete(Step.AGENT_AUDIO, now - self._inject_sent_at, f"first frame {size} bytes")

    def _complete(self, step: Step, latency_s: float, detail: str = "") -> StepDone:
        done = StepDone(step, latency_s, detail)
        self.done[step] = done
        return done


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class CanaryOptions:
    url: str
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    text: str = DEFAULT_TEXT


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``token`` as its ``token`` query parameter (replacing one already there)."""
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def shown_url(url: str) -> str:
    """The URL as printed: no query (it may hold a token) and no user information."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _report(out: TextIO, done: StepDone) -> None:
    detail = f"  {done.detail}" if done.detail else ""
    print(f"ok    {done.step.value:<17} {done.latency_s * 1000:8.0f} ms{detail}", file=out, flush=True)


async def run(options: CanaryOptions, out: TextIO, err: TextIO) -> Outcome:
    """Run the conversation once; prints each step to ``out`` and the failure, if any, to ``err``."""
    check = CanaryCheck()
    print(f"canary {shown_url(options.url)}", file=out, flush=True)
    started = trio.current_time()
    try:
        with trio.fail_after(options.timeout_s):
            await _converse(options, check, out)
    except BaseException as exc:  # classified below; anything else is re-raised
        failure = _classify(_leaf(exc), check, options)
        if failure is None:
            raise
        print(f"FAIL  {failure.step.value}: {failure.sentence}", file=err, flush=True)
        return failure.outcome
    print(f"passed in {trio.current_time() - started:.2f} s", file=out, flush=True)
    return Outcome.PASSED


async def _converse(options: CanaryOptions, check: CanaryCheck, out: TextIO) -> None:
    started = trio.current_time()
    url = with_token(options.url, options.token)
    async with open_websocket_url(url, max_message_size=MAX_MESSAGE_BYTES) as ws:
        _report(out, check.connected(started, trio.current_time()))
        await ws.send_message(json.dumps(settings_message(options.url)))
        check.settings_sent(trio.current_time())
        while not check.finished:
            message = await ws.get_message()
            done = check.received(message, trio.current_time())
            if done is None:
                continue
            _report(out, done)
            if done.step is Step.SETTINGS_APPLIED:
                await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": options.text}))
                check.inject_sent(trio.current_time())


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _classify(problem: BaseException, check: CanaryCheck, options: CanaryOptions) -> CanaryFailure | None:
    step = check.pending()
    if isinstance(problem, CanaryFailure):
        return problem
    if isinstance(problem, trio.TooSlowError):
        return CanaryFailure(step, Outcome.TIMEOUT, f"no answer within {options.timeout_s:g} s")
    if isinstance(problem, ConnectionRejected):
        status = problem.status_code
        if status in (401, 403):
            hint = "a token is required or was not accepted" if status == 401 else "the token or Origin is not allowed"
            return CanaryFailure(
                step, Outcome.UNAUTHORIZED, f"the proxy refused the upgrade with HTTP {status} ({hint})"
            )
        return CanaryFailure(step, Outcome.REJECTED, f"the proxy refused the upgrade with HTTP {status}")
    if isinstance(problem, ConnectionClosed):
        reason = problem.reason
        code = getattr(reason, "code", None)
        text = (getattr(reason, "reason", None) or "")[:123]
        said = f" ({text})" if text else ""
        return CanaryFailure(step, Outcome.CLOSED, f"the proxy closed the connection with {code}{said}")
    if isinstance(problem, HandshakeError) and isinstance(problem.__cause__, OSError):
        problem = problem.__cause__  # trio-websocket wraps the connect's own error
    if isinstance(problem, ssl.SSLError):
        return CanaryFailure(step, Outcome.UNREACHABLE, f"TLS failed: {problem.reason or problem}")
    if isinstance(problem, OSError):
        detail = _os_detail(problem)
        return CanaryFailure(step, Outcome.UNREACHABLE, f"cannot connect to {shown_url(options.url)}: {detail}")
    if isinstance(problem, HandshakeError | trio.BrokenResourceError):
        return CanaryFailure(step, Outcome.UNREACHABLE, "the WebSocket upgrade failed (is this the proxy's port?)")
    return None


def _os_detail(problem: OSError) -> str:
    """The most specific sentence of a connect failure (trio groups one error per address it tried)."""
    cause = problem.__cause__
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return problem.strerror or str(problem) or type(problem).__name__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy canary",
        description=(
            "Run one conversation against a deployed proxy (Settings, SettingsApplied, InjectUserMessage, the "
            "assistant's ConversationText, agent audio, AgentAudioDone), print each step with its latency and exit "
            "0 when all of them pass. Exit statuses: "
            + ", ".join(f"{o.value} {o.name.lower().replace('_', ' ')}" for o in Outcome)
            + "."
        ),
        epilog="example: python -m proxy canary --url wss://voice.example.com/openai",
    )
    p.add_argument(
        "--url", required=True, help="the proxy's WebSocket URL: ws[s]://HOST[:PORT]/openai or /deepgram-proxy"
    )
    p.add_argument("--token", help=f"client token, sent as ?token= (better: env {TOKEN_VARIABLE}, not shown by ps)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds for the whole run (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument("--text", default=DEFAULT_TEXT, help="the message to inject")
    return p


def parse(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> CanaryOptions:
    """The options; ``SystemExit(2)`` with a line on standard error when they are wrong."""
    p = _parser()
    args = p.parse_args(argv)
    parts = urlsplit(args.url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        p.error("--url must be ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH")
    if not args.timeout > 0:
        p.error("--timeout must be a positive number of seconds")
    if not args.text.strip():
        p.error("--text must not be empty")
    token = args.token if args.token is not None else environ.get(TOKEN_VARIABLE) or None
    return CanaryOptions(url=args.url, token=token, timeout_s=args.timeout, text=args.text)


def main(argv: list[str]) -> int:
    """``python -m proxy canary [...]``; returns the exit status."""
    try:
        options = parse(argv, os.environ)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else Outcome.USAGE
    try:
        return int(trio.run(run, options, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130
