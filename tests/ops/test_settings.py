"""Every flag and variable: validated at start (one clear line, exit 2), listed in --help and the docs, shown by
``python -m proxy config`` with its source and without any secret."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import config as config_module
from proxy.cli import _parser, build_config, main
from proxy.config import LIMIT_SETTINGS, Limits

ROOT = Path(__file__).parents[2]
OPENAI_KEY = "sk-live-OPS-CLI-never-shown-0123456789"
DEEPGRAM_KEY = "dg0123456789abcdef0123456789abcdef"
CLIENT_TOKEN = "client-token-never-shown-42"
JWT_SECRET = "jwt-secret-that-is-long-enough-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets (the calling shell's keys and limits must not leak in)."""
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_", "LOG_")):
            monkeypatch.delenv(name)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the console script and --version ------------------------------------------------------------------------------


def test_the_console_script_entry_point_reads_sys_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["voice-agent-proxy", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().endswith(importlib.metadata.version("voice-agent-proxy"))


def test_the_console_script_is_declared_on_main() -> None:
    scripts = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "voice-agent-proxy"]
    assert scripts
    assert scripts[0].value == "proxy.cli:main"


# -- one clear line and exit 2 for every kind of bad value ---------------------------------------------------------

BAD_FLAGS = [
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "eighty"], "--port"),
    (["--host", ""], "--host"),
    (["--log-level", "verbose"], "--log-level"),
    (["--log-format", "xml"], "--log-format"),
    (["--deepgram-auth", "cookie"], "--deepgram-auth"),
    (["--openai-url", "http://example.test/"], "OPENAI_REALTIME_URL"),
    (["--deepgram-agent-url", "not a url"], "DEEPGRAM_AGENT_URL"),
    (["--deepgram-listen-url", "ftp://example.test/"], "DEEPGRAM_LISTEN_URL"),
    (["--deferred-response-create-timeout-ms", "-5"], "--deferred-response-create-timeout-ms"),
    (["--deferred-response-create-timeout-ms", "soon"], "--deferred-response-create-timeout-ms"),
    (["--trusted-proxies", "10.0.0.0/33"], "--trusted-proxies"),
    (["--jwt-leeway-s", "lots"], "--jwt-leeway-s"),
    (["--jwt-leeway-s", "301"], "leeway"),
    (["--client-tokens-file", "/nonexistent/tokens"], "client tokens"),
    (["--jwt-audience", "aud"], "audience"),
    (["--max-sessions", "50", "--max-connections", "50"], "max connections"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--port"], "--port"),
]


@pytest.mark.parametrize(("argv", "named"), BAD_FLAGS, ids=[" ".join(argv) for argv, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_clear_line_and_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert named in err
    assert "Traceback" not in err


BAD_VARIABLES = [
    ("PROXY_PORT", "70000"),
    ("PROXY_PORT", "eighty"),
    ("OPENAI_PROXY_PORT", "65536"),
    ("PROXY_HOST", "two words"),
    ("LOG_LEVEL", "loud"),
    ("LOG_FORMAT", "yaml"),
    ("DEEPGRAM_AUTH", "cookie"),
    ("OPENAI_REALTIME_URL", "http://example.test/"),
    ("DEEPGRAM_AGENT_URL", "example.test"),
    ("DEEPGRAM_LISTEN_URL", "https://example.test/"),
    ("OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH", "maybe"),
    ("DEEPGRAM_SYNTHETIC_AUDIO_DONE", "2"),
    ("PROXY_DEMO", "maybe"),
    ("OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS", "nan"),
    ("PROXY_TRUSTED_PROXIES", "everyone"),
    ("PROXY_JWT_LEEWAY_S", "a while"),
    ("PROXY_CLIENT_TOKENS_FILE", "/nonexistent/tokens"),
    ("PROXY_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VARIABLES, ids=[f"{k}={v}" for k, v in BAD_VARIABLES])
def test_a_bad_variable_is_one_clear_line_and_exit_2(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = run_main([], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("configuration error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert variable in err or "file" in err
    assert "Traceback" not in err


def _bad_values(parse: object) -> list[str]:
    if parse is config_module.positive_int:
        return ["0", "-3", "1.5", "many"]
    if parse is config_module.seconds:
        return ["-1", "inf", "nan", "soon"]
    return ["0", "-1", "inf", "nan", "soon"]  # positive_seconds, parse_rate


LIMIT_CASES = [
    (name, flag, variable, bad)
    for name, (flag, variable, parse) in LIMIT_SETTINGS.items()
    for bad in _bad_values(parse)
]


@pytest.mark.parametrize(("name", "flag", "variable", "bad"), LIMIT_CASES)
def test_every_limit_refuses_a_bad_value_by_flag_and_by_variable(
    name: str, flag: str, variable: str, bad: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_main([f"{flag}={bad}"], capsys)
    assert (code, len(err.strip().splitlines())) == (2, 1), err
    assert flag in err
    monkeypatch.setenv(variable, bad)
    code, _out, err = run_main([], capsys)
    assert (code, len(err.strip().splitlines())) == (2, 1), err
    assert variable in err


@pytest.mark.parametrize("name", list(LIMIT_SETTINGS))
def test_every_limit_is_set_by_its_variable_and_its_flag_wins(name: str) -> None:
    flag, variable, _parse = LIMIT_SETTINGS[name]
    default = getattr(Limits(), name)
    by_env = default + 1
    by_flag = default + 2
    if name == "max_sessions":  # stays below max_connections
        by_env, by_flag = default - 1, default - 2
    env = {variable: str(by_env)}
    assert getattr(config_module.from_env(env).limits, name) == by_env
    args = _parser().parse_args([flag, str(by_flag)])
    assert getattr(build_config(args, env).limits, name) == by_flag


def test_every_limit_is_settable() -> None:
    """A limit added to Limits must be added to LIMIT_SETTINGS (and so get a flag and a variable)."""
    fields = {f.name for f in dataclasses.fields(Limits)}
    assert fields <= set(LIMIT_SETTINGS)


def test_the_simulator_refuses_an_out_of_range_port(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(["simulate", "--port", "70000"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--port" in err


# -- --help and the docs ------------------------------------------------------------------------------------------


def test_help_is_grouped_and_lists_every_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(["--help"], capsys)
    assert code == 0
    for group in ("listening:", "upstreams:", "clients & auth:", "limits:", "logging:", "compatibility:"):
        assert group in out
    for flag, variable, _parse in LIMIT_SETTINGS.values():
        assert flag in out
        assert variable in out.replace("\n", " ").replace("  ", "")


def test_every_flag_and_variable_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    flags = {option for action in _parser()._actions for option in action.option_strings} - {"-h", "--help"}
    missing = sorted(flag for flag in flags if f"`{flag}" not in doc)
    assert not missing, missing
    variables = {variable for _flag, variable, _parse in LIMIT_SETTINGS.values()}
    variables |= {"LOG_FORMAT", "LOG_LEVEL", "DEEPGRAM_AUTH", "PROXY_HOST", "PROXY_PORT", "PROXY_DEMO"}
    assert not sorted(v for v in variables if f"`{v}" not in doc)


# -- python -m proxy config ---------------------------------------------------------------------------------------


def test_config_shows_every_setting_with_its_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROXY_MAX_SESSIONS", "10")
    monkeypatch.setenv("LOG_FORMAT", "json")
    code, out, err = run_main(["config", "--port", "9000", "--max-sessions", "12"], capsys)
    assert (code, err) == (0, "")
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert rows["port"].split()[1:] == ["9000", "flag", "--port"]
    assert rows["limits.max_sessions"].split()[1:] == ["12", "flag", "--max-sessions"]
    assert rows["log_format"].split()[1:] == ["json", "env", "LOG_FORMAT"]
    assert rows["host"].split()[1:] == ["127.0.0.1", "default"]
    assert {f"limits.{name}" for name in LIMIT_SETTINGS} <= set(rows)


def test_config_never_shows_a_key_a_token_or_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(JWT_SECRET + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("DEEPGRAM_API_KEY", DEEPGRAM_KEY)
    monkeypatch.setenv("PROXY_CLIENT_TOKENS", CLIENT_TOKEN)
    # A key pasted into a URL and an audience is masked too.
    monkeypatch.setenv("OPENAI_REALTIME_URL", f"wss://example.test/v1/realtime?key={DEEPGRAM_KEY}")
    code, out, err = run_main(["config", "--jwt-secrets-file", str(secrets), "--jwt-audience", OPENAI_KEY], capsys)
    assert code == 0
    for secret in (OPENAI_KEY, DEEPGRAM_KEY, CLIENT_TOKEN, JWT_SECRET):
        assert secret not in out + err
        assert secret[4:16] not in out + err
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert "set (masked)" in rows["openai_api_key"]
    assert "1 set (masked)" in rows["client_tokens"]
    assert "1 set (masked)" in rows["jwt_secrets"]


def test_config_runs_as_a_subprocess_and_starts_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "config"],
        env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": OPENAI_KEY},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert OPENAI_KEY not in result.stdout + result.stderr
    assert re.search(r"^openai_api_key\s+set \(masked\)\s+env OPENAI_API_KEY$", result.stdout, re.M)
    assert "listening on" not in result.stdout
