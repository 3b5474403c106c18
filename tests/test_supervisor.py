"""The supervisor's rules that need no process: restart delays, exit statuses in words, worker counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from proxy import config as config_module
from proxy.config import ConfigError
from proxy.supervisor import RestartPolicy, bind_reuseport, describe_status
from tests.test_cli import proxy_env


def test_quick_deaths_double_the_restart_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=30.0, stable_s=60.0)
    delays = [policy.delay(0, lived_s=0.1) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_worker_that_ran_long_enough_restarts_after_the_first_delay_again() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=30.0, stable_s=60.0)
    for _ in range(5):
        policy.delay(0, lived_s=1.0)
    assert policy.delay(0, lived_s=60.0) == 0.5
    assert policy.delay(0, lived_s=1.0) == 1.0


def test_slots_back_off_independently() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=30.0, stable_s=60.0)
    policy.delay(0, lived_s=0.0)
    policy.delay(0, lived_s=0.0)
    assert policy.delay(1, lived_s=0.0) == 0.5


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (0, "exit code 0"),
        (3 << 8, "exit code 3"),
        (signal.SIGKILL, "killed by SIGKILL"),
        (signal.SIGSEGV, "killed by SIGSEGV"),
    ],
)
def test_exit_statuses_in_words(status: int, words: str) -> None:
    assert describe_status(status) == words


@pytest.mark.parametrize(("text", "count"), [("1", 1), ("4", 4), (" 2 ", 2), ("256", 256)])
def test_worker_counts(text: str, count: int) -> None:
    assert config_module.workers(text, "--workers") == count


def test_auto_is_one_worker_per_usable_cpu() -> None:
    assert config_module.workers("auto", "--workers") == len(os.sched_getaffinity(0))
    assert config_module.from_env({"PROXY_WORKERS": "AUTO"}).workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", "257", ""])
def test_bad_worker_counts_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        config_module.workers(text, "--workers")


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--workers", "0"], {}), (["--workers", "many"], {}), ([], {"PROXY_WORKERS": "1000"})],
)
def test_a_bad_worker_count_is_one_line_and_exit_code_2(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", "0", *args],
        env=proxy_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_port_zero_is_picked_once_for_every_socket() -> None:
    first = bind_reuseport("127.0.0.1", 0)
    port = first[0].getsockname()[1]
    second = bind_reuseport("127.0.0.1", port)  # SO_REUSEPORT: the same port binds again
    try:
        assert port != 0
        assert second[0].getsockname()[1] == port
    finally:
        for sock in (*first, *second):
            sock.close()
