"""Reply pacing: a head start sent at once, then faster than real time; strict real time stays available."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import trio
import trio.testing

from proxy.sim import pacing
from proxy.sim.pacing import REAL_TIME, Pacing
from proxy.sim.server import SimOptions

from .helpers import AgentClient, OpenAIClient, memory_connection
from .test_agent_sim import PATH as AGENT_PATH
from .test_agent_sim import ready
from .test_openai_sim import PATH as OPENAI_PATH
from .test_openai_sim import open_session, user_text


def test_the_head_start_leaves_at_once_and_the_rest_at_speed() -> None:
    burst = Pacing(speed=2.0, head_start_s=1.0)
    assert [burst.due(t) for t in (0.0, 0.5, 1.0, 1.2, 2.0, 3.0)] == [0.0, 0.0, 0.0, pytest.approx(0.1), 0.5, 1.0]
    assert [REAL_TIME.due(t) for t in (0.0, 0.1, 2.5)] == [0.0, 0.1, 2.5]
    assert Pacing(speed=0, head_start_s=0).due(7.0) == 0.0


@pytest.mark.parametrize(("speed", "head_start"), [(-1.0, 0.0), (float("nan"), 0.0), (1.0, -0.1), (1.0, float("inf"))])
def test_invalid_pacing_is_refused(speed: float, head_start: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number"):
        Pacing(speed=speed, head_start_s=head_start)


def test_the_defaults_burst_and_the_environment_overrides_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pacing.SPEED_VARIABLE, raising=False)
    monkeypatch.delenv(pacing.HEAD_START_VARIABLE, raising=False)
    options = SimOptions(faults="")
    assert (options.speed, options.head_start_s) == (2.0, 1.0)
    monkeypatch.setenv(pacing.SPEED_VARIABLE, "1")
    monkeypatch.setenv(pacing.HEAD_START_VARIABLE, "0")
    assert SimOptions(faults="").reply_pacing == REAL_TIME
    monkeypatch.setenv(pacing.SPEED_VARIABLE, "fast")
    with pytest.raises(ValueError, match="PROXY_SIM_SPEED must be a number, not 'fast'"):
        SimOptions(faults="")


async def test_agent_reply_audio_bursts_then_runs_at_twice_real_time(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_connection(AGENT_PATH, SimOptions(speed=2.0, head_start_s=1.0, faults="")) as ws:
        client: AgentClient = await ready(ws)
        await client.send({"type": "InjectUserMessage", "content": "Hello agent, how are you today"})
        start = trio.current_time()
        times: list[float] = []
        while True:
            frame = await ws.get_message()
            if isinstance(frame, bytes):
                times.append(trio.current_time() - start)
                client.audio += frame
            elif json.loads(frame)["type"] == "AgentAudioDone":
                done = trio.current_time() - start
                break
    playback = len(client.audio) / 48000
    assert playback > 1.5
    # 100 ms chunks: the eleven that start within the first second at once, then one every 50 ms.
    assert times == pytest.approx([max(0.0, i * 0.1 - 1.0) / 2 for i in range(len(times))], abs=1e-9)
    assert done == pytest.approx((playback - 1.0) / 2, abs=1e-9)


async def test_openai_reply_audio_bursts_then_runs_at_speed(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_connection(OPENAI_PATH, SimOptions(speed=3.0, head_start_s=0.5, faults="")) as ws:
        client: OpenAIClient = await open_session(ws)
        await client.send(user_text("tell me something long enough to take a while to say"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        start = trio.current_time()
        times, audio = [], b""
        while True:
            event = await client.next()
            if event["type"] == "response.output_audio.delta":
                times.append(trio.current_time() - start)
                audio += base64.b64decode(event["delta"])
            if event["type"] == "response.done":
                end = trio.current_time() - start
                break
    assert times == pytest.approx([max(0.0, i * 0.1 - 0.5) / 3 for i in range(len(times))], abs=1e-9)
    assert end == pytest.approx((len(audio) / 48000 - 0.5) / 3, abs=1e-9)


def test_simulate_refuses_a_negative_head_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "simulate", "--port", "0", "--head-start-ms", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: head start must be a finite number of milliseconds >= 0"


def test_the_embedded_simulators_refuse_a_bad_speed_variable_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PROXY_SIM_SPEED": "-1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: simulator: speed must be a finite number >= 0"
