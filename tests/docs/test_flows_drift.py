"""The flows in docs/protocol.md and docs/deepgram.md are what the protocol cores produce today."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.docs import flows


def test_the_documented_flows_match_what_the_cores_produce() -> None:
    problems = flows.stale()
    assert not problems, f"{problems}; regenerate with: {flows.REGENERATE}"


def test_the_check_fails_with_the_regenerate_command_when_a_block_is_edited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path
    for document in flows.documents():
        target = root / document
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (flows.ROOT / document).read_text()
        target.write_text(text.replace('{"type":"SettingsApplied"}', '{"type":"SettingsApplied","x":1}', 1))
    monkeypatch.setattr(flows, "ROOT", root)
    assert flows.main([]) == 1
    assert flows.REGENERATE in capsys.readouterr().err
    assert flows.main(["--write"]) == 0
    assert flows.main([]) == 0


def test_every_flow_has_its_markers_once_and_in_one_document() -> None:
    keys = [flow.key for flow in flows.FLOWS]
    assert len(keys) == len(set(keys))
    for flow in flows.FLOWS:
        begin, end = flows._markers(flow.key)
        text = (flows.ROOT / flow.document).read_text()
        assert text.count(begin) == 1, flow.key
        assert text.count(end) == 1, flow.key


@pytest.mark.parametrize("flow", flows.FLOWS, ids=lambda flow: flow.key)
def test_every_documented_text_frame_is_json_and_numbered_like_the_diagram(flow: flows.Flow) -> None:
    rendered = flows.render(flow)
    diagram, frames = rendered.split("```text")
    arrows = [line for line in diagram.splitlines() if "->>" in line or "-)" in line]
    numbered = [line for line in frames.splitlines() if line[:2].strip().isdigit()]
    assert len(arrows) == len(numbered)
    for line in numbered:
        payload = line.split(": ", 1)[1]
        if not payload.startswith("<"):
            assert isinstance(json.loads(payload), dict)


def test_generating_twice_gives_the_same_text() -> None:
    assert [flows.render(flow) for flow in flows.FLOWS] == [flows.render(flow) for flow in flows.FLOWS]


_MERMAID_LINE = re.compile(
    r"    (autonumber|participant [CPU] as [\w ]+|[CPU](->>|-\))[CPU]: [^;#\n]+|Note over C,U: [^;#\n]+)"
)


@pytest.mark.parametrize("flow", flows.FLOWS, ids=lambda flow: flow.key)
def test_every_diagram_line_is_one_mermaid_statement(flow: flows.Flow) -> None:
    """Labels never carry what ends or comments a Mermaid statement (``;``, ``#``), so every arrow renders."""
    diagram = flows.render(flow).split("```text")[0].splitlines()
    assert diagram[:2] == ["```mermaid", "sequenceDiagram"]
    body = diagram[2 : diagram.index("```", 2)]
    assert [line for line in body if not _MERMAID_LINE.fullmatch(line)] == []
