"""The listener's knobs: environment variables, flags (which win), defaults and clear errors."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.cli import _parser, build_config, main
from proxy.config import ConfigError, Limits, from_env


def test_defaults_leave_room_above_the_sessions() -> None:
    limits = Limits()
    assert limits.max_connections > limits.max_sessions + limits.max_pending_handshakes
    assert limits.max_connections_per_ip < limits.max_pending_handshakes
    assert (limits.handshake_timeout_s, limits.drain_timeout_s, limits.shutdown_grace_s) == (10.0, 20.0, 5.0)
    assert from_env({}).trusted_proxies == ()


def test_the_environment_sets_the_listener_limits() -> None:
    config = from_env(
        {
            "PROXY_MAX_CONNECTIONS": "5000",
            "PROXY_MAX_PENDING_HANDSHAKES": "64",
            "PROXY_MAX_CONNECTIONS_PER_IP": "8",
            "PROXY_HANDSHAKE_TIMEOUT": "2.5",
            "PROXY_DRAIN_TIMEOUT_S": "0",
            "PROXY_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::1",
        }
    )
    limits = config.limits
    assert (limits.max_connections, limits.max_pending_handshakes, limits.max_connections_per_ip) == (5000, 64, 8)
    assert (limits.handshake_timeout_s, limits.drain_timeout_s) == (2.5, 0.0)
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1/128"))


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_MAX_CONNECTIONS", "5000")
    monkeypatch.setenv("PROXY_TRUSTED_PROXIES", "10.0.0.0/8")
    args = _parser().parse_args(
        [
            *("--max-connections", "3000", "--max-pending-handshakes", "32", "--max-connections-per-ip", "4"),
            *("--handshake-timeout", "3", "--drain-timeout", "45", "--trusted-proxies", "192.168.0.0/16"),
        ]
    )
    config = build_config(args)
    limits = config.limits
    assert (limits.max_connections, limits.max_pending_handshakes, limits.max_connections_per_ip) == (3000, 32, 4)
    assert (limits.handshake_timeout_s, limits.drain_timeout_s) == (3.0, 45.0)
    assert config.trusted_proxies == (ipaddress.ip_network("192.168.0.0/16"),)


@pytest.mark.parametrize(
    "env",
    [
        {"PROXY_MAX_CONNECTIONS": "many"},
        {"PROXY_MAX_CONNECTIONS_PER_IP": "0"},
        {"PROXY_MAX_PENDING_HANDSHAKES": "-1"},
        {"PROXY_HANDSHAKE_TIMEOUT": "0"},
        {"PROXY_HANDSHAKE_TIMEOUT": "inf"},
        {"PROXY_DRAIN_TIMEOUT_S": "-1"},
        {"PROXY_TRUSTED_PROXIES": "10.0.0.0/8, not-a-network"},
    ],
)
def test_invalid_listener_values_are_one_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        from_env(env)


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-connections", "1000"],  # not above the default 1000 sessions
        ["--max-sessions", "50", "--max-connections", "50"],
        ["--handshake-timeout", "0"],
        ["--trusted-proxies", "10.0.0.0/33"],
    ],
)
def test_invalid_listener_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("configuration error: ")
