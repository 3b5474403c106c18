"""/metrics through prometheus-client: the families, their types and labels, one process and the worker archive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from trio_websocket import open_websocket_url

from proxy.metrics import Metrics, SessionClock, archive_dead_worker, close_code_label
from proxy.session import SessionStats
from tests.server.test_server import echo_upstream, http_get, proxy

#: Family -> type, as documented in docs/operations.md.
FAMILIES = {
    "proxy_sessions_active": "gauge",
    "proxy_sessions": "counter",
    "proxy_connections_open": "gauge",
    "proxy_handshakes_pending": "gauge",
    "proxy_rejected": "counter",
    "proxy_accept_errors": "counter",
    "proxy_frames": "counter",
    "proxy_upstream_failures": "counter",
    "proxy_client_close": "counter",
    "proxy_sessions_closed": "counter",
    "proxy_session_errors": "counter",
    "proxy_session_duration_seconds": "histogram",
    "proxy_settings_applied_seconds": "histogram",
    "proxy_upstream_connect_seconds": "histogram",
    "proxy_inject_first_audio_seconds": "histogram",
    "voice_agent_proxy_build_info": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "python_info": "gauge",
    "python_gc_collections": "counter",
}


async def test_one_process_metrics_parse_with_every_family() -> None:
    async with echo_upstream() as up, proxy(upstream_port=up) as (_server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
        await trio.sleep(0.05)
        _status, headers, body = await http_get(port, "/metrics")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {name: families[name].type for name in FAMILIES if name in families} == FAMILIES
    closed = [(s.labels, s.value) for s in families["proxy_sessions_closed"].samples if s.name.endswith("_total")]
    assert closed == [({"route": "relay", "code": "1000", "by": "client"}, 1.0)]
    counts = [s for s in families["proxy_session_duration_seconds"].samples if s.name.endswith("_count")]
    assert [(s.labels, s.value) for s in counts] == [({"route": "relay"}, 1.0)]
    connects = [s for s in families["proxy_upstream_connect_seconds"].samples if s.name.endswith("_count")]
    assert [s.value for s in connects] == [1.0]


def test_two_servers_in_one_process_keep_their_own_counts() -> None:
    a, b = Metrics(), Metrics()
    a.count_rejected("capacity")
    assert a.rejected_total == {"capacity": 1}
    assert b.rejected_total == {}


@pytest.mark.parametrize(("code", "label"), [(1000, "1000"), (1011, "1011"), (4000, "other"), (3999, "other")])
def test_close_code_labels_are_bounded(code: int, label: str) -> None:
    assert close_code_label(code) == label


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_session_clock_times_settings_applied_and_first_audio_after_an_inject() -> None:
    metrics, clock = Metrics(), FakeClock()
    timing = SessionClock(metrics, "openai", 0.0, clock)
    clock.now = 0.4
    timing.to_client([b"early audio", '{"type":"Welcome"}'])
    timing.to_client(['{"type":"SettingsApplied"}'])
    clock.now = 2.0
    timing.to_client(['{"type":"SettingsApplied"}'])  # only the first counts
    timing.client_text('{"type":"InjectUserMessage","content":"hi"}')
    clock.now = 2.75
    timing.to_client(['{"type":"ConversationText"}'])
    timing.to_client(['{"type":"AgentStartedSpeaking"}', b"\x00\x00"])
    clock.now = 3.0
    timing.to_client([b"\x00\x00"])  # later audio of the same answer does not count
    registry = metrics.registry
    assert registry.get_sample_value("proxy_settings_applied_seconds_count", {"route": "openai"}) == 1
    assert registry.get_sample_value("proxy_settings_applied_seconds_sum", {"route": "openai"}) == pytest.approx(0.4)
    assert registry.get_sample_value("proxy_inject_first_audio_seconds_count", {"route": "openai"}) == 1
    assert registry.get_sample_value("proxy_inject_first_audio_seconds_sum", {"route": "openai"}) == pytest.approx(0.75)


def test_frames_of_live_sessions_are_folded_once() -> None:
    metrics, stats = Metrics(), SessionStats()
    stats.client_frames, stats.upstream_frames = 3, 5
    metrics.refresh([stats], connections_open=2, handshakes_pending=1)
    stats.client_frames = 4
    metrics.refresh([stats], connections_open=1, handshakes_pending=0)
    metrics.session_ended("openai", stats, 1000, 1.0)
    registry = metrics.registry
    assert registry.get_sample_value("proxy_frames_total", {"leg": "client"}) == 4
    assert registry.get_sample_value("proxy_frames_total", {"leg": "upstream"}) == 5
    assert registry.get_sample_value("proxy_connections_open") == 1


def write(path: Path, values: dict[str, float]) -> None:
    file = MmapedDict(str(path))
    for key, number in values.items():
        file.write_value(key, number, 0.0)
    file.close()


def totals(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


def key(name: str, sample: str, labels: dict[str, str]) -> str:
    import json

    return json.dumps([name, sample, labels, "help"], sort_keys=True)


def test_a_dead_workers_counts_are_archived_not_lost_and_not_doubled(tmp_path: Path) -> None:
    sessions = key("proxy_sessions", "proxy_sessions_total", {"route": "openai"})
    bucket = key("proxy_session_duration_seconds", "proxy_session_duration_seconds_bucket", {"le": "1.0"})
    write(tmp_path / "counter_101.db", {sessions: 3})
    write(tmp_path / "counter_102.db", {sessions: 4})
    write(tmp_path / "counter_103.db", {sessions: 5})
    write(tmp_path / "histogram_101.db", {bucket: 2})
    before = totals(tmp_path)
    archive_dead_worker(str(tmp_path), 101)
    archive_dead_worker(str(tmp_path), 102)
    archive_dead_worker(str(tmp_path), 999)  # nothing to fold
    assert totals(tmp_path) == before
    assert before[("proxy_sessions_total", (("route", "openai"),))] == 12
    assert sorted(os.listdir(tmp_path)) == ["counter_103.db", "counter_archive.db", "histogram_archive.db", "lock"]


def test_a_workers_file_not_written_yet_neither_breaks_a_start_nor_a_scrape(tmp_path: Path) -> None:
    # A worker starting creates its value file before it writes the header: another worker's start (registering
    # the collector) and a scrape that read the directory in between must both go on.
    sessions = key("proxy_sessions", "proxy_sessions_total", {"route": "openai"})
    write(tmp_path / "counter_101.db", {sessions: 3})
    (tmp_path / "counter_102.db").touch()
    metrics = Metrics(str(tmp_path))
    text = metrics.render().decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("proxy_sessions_total", (("route", "openai"),))] == 3
