"""Configuration from environment and flags: upstream choice, aliases, validation, no secrets in reprs."""

from __future__ import annotations

import pytest

from proxy.config import (
    DEEPGRAM_AGENT_DEFAULT_URL,
    OPENAI_DEFAULT_URL,
    ConfigError,
    UpstreamSource,
    from_env,
)
from proxy.core import Close, relay_close, truncate_reason


def test_no_key_and_no_url_means_the_embedded_simulator() -> None:
    config = from_env({})
    assert config.openai.source is UpstreamSource.SIMULATOR
    assert config.deepgram_agent.source is UpstreamSource.SIMULATOR
    assert config.uses_simulator()


def test_a_key_alone_means_the_real_provider() -> None:
    config = from_env({"OPENAI_API_KEY": " sk-abc \n", "DEEPGRAM_API_KEY": "dg"})
    assert config.openai.url == OPENAI_DEFAULT_URL
    assert config.openai.key == "sk-abc"
    assert config.openai.source is UpstreamSource.PROVIDER
    assert config.deepgram_agent.url == DEEPGRAM_AGENT_DEFAULT_URL
    assert not config.uses_simulator()


def test_an_explicit_url_is_used_as_given_with_or_without_a_key() -> None:
    config = from_env({"OPENAI_REALTIME_URL": "ws://127.0.0.1:9000/v1/realtime?model=x"})
    assert config.openai.url == "ws://127.0.0.1:9000/v1/realtime?model=x"
    assert config.openai.key is None
    assert config.openai.source is UpstreamSource.URL


def test_a_blank_key_is_a_misconfiguration_not_the_simulator() -> None:
    config = from_env({"DEEPGRAM_API_KEY": "   "})
    assert config.deepgram_agent.source is UpstreamSource.MISCONFIGURED
    assert config.deepgram_listen.source is UpstreamSource.MISCONFIGURED


def test_flags_override_the_environment() -> None:
    config = from_env({"PROXY_PORT": "9000", "PROXY_HOST": "0.0.0.0"}, port=0, host="127.0.0.2")
    assert (config.host, config.port) == ("127.0.0.2", 0)


def test_openai_proxy_port_is_an_alias_for_proxy_port() -> None:
    assert from_env({"OPENAI_PROXY_PORT": "8181"}).port == 8181
    assert from_env({"OPENAI_PROXY_PORT": "8181", "PROXY_PORT": "8282"}).port == 8282


def test_reference_compatible_knobs() -> None:
    config = from_env(
        {
            "OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH": "1",
            "OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS": "500",
        }
    )
    assert config.client_json_passthrough is True
    assert config.deferred_response_create_timeout_s == 0.5
    assert from_env({}).deferred_response_create_timeout_s == 20.0


@pytest.mark.parametrize(
    "env",
    [
        {"PROXY_PORT": "eighty"},
        {"PROXY_PORT": "70000"},
        {"OPENAI_REALTIME_URL": "http://example.test/"},
        {"OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS": "-5"},
        {"OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS": "nan"},
    ],
)
def test_invalid_values_are_clear_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        from_env(env)


def test_keys_never_appear_in_reprs_or_errors() -> None:
    config = from_env(
        {"OPENAI_API_KEY": "sk-SECRET-1", "DEEPGRAM_API_KEY": "dg-SECRET-2", "PROXY_CLIENT_TOKENS": "t0k"}
    )
    text = repr(config)
    assert "SECRET" not in text
    assert "t0k" not in text


def test_simulator_routes_are_repointed_at_the_embedded_simulator() -> None:
    config = from_env({"OPENAI_API_KEY": "sk-x"}).with_simulator_port("127.0.0.1", 4321)
    assert config.openai.source is UpstreamSource.PROVIDER
    assert config.deepgram_agent.url == "ws://127.0.0.1:4321/v1/agent/converse"
    assert config.deepgram_listen.url == "ws://127.0.0.1:4321/v1/listen"


@pytest.mark.parametrize(
    ("seen", "sent"),
    [
        ((1000, "bye"), Close(1000, "bye")),
        ((4001, "custom"), Close(4001, "custom")),
        ((1005, None), Close(1000, "")),
        ((1006, None), Close(1011, "")),
        ((None, None), Close(1011, "")),
        ((1015, "tls"), Close(1011, "")),
        ((999, "x"), Close(1011, "")),
        ((2000, "reserved"), Close(1011, "")),
        ((1011, "upstream broke"), Close(1011, "upstream broke")),
    ],
)
def test_close_codes_are_mapped_to_sendable_ones(seen: tuple[int | None, str | None], sent: Close) -> None:
    assert relay_close(*seen) == sent


def test_close_reasons_are_cut_to_123_bytes_on_a_character_boundary() -> None:
    reason = truncate_reason("é" * 100)
    assert len(reason.encode()) <= 123
    assert reason == "é" * 61
