"""The deployment files are checked, not built: the Dockerfile's properties, every Kubernetes manifest (probes,
ports, the grace period against the drain default, the security context, keys only from Secrets), the systemd
unit, and the container's health check script against a running proxy."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli import _parser
from proxy.config import Config, Limits

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
LIMITS = Limits()
#: The lock of exact runtime versions the image installs.
LOCK = "requirements/runtime.txt"
#: Whatever looks like a credential value: OpenAI keys, long hex or base64 runs.
CREDENTIAL = re.compile(r"sk-[A-Za-z0-9_-]{8,}|\b[0-9a-f]{32,}\b|[A-Za-z0-9+/]{40,}={0,2}")


# -- Dockerfile ------------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), split into stages at FROM."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, " ".join(argument.split())))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [argument for instruction, argument in stage if instruction == name]


def test_the_image_is_built_in_stages_from_a_slim_python() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base.group(1))
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert all(instructions(stage, "FROM")[0].startswith("${PYTHON_IMAGE}") for stage in stages)


def test_the_build_stage_installs_the_locked_versions_from_wheels() -> None:
    build = dockerfile_stages()[0]
    assert any(argument.split()[0] == LOCK for argument in instructions(build, "COPY"))
    runs = instructions(build, "RUN")
    assert any(f"-r {LOCK}" in run and "--only-binary=:all:" in run for run in runs)
    # The proxy itself adds no unlocked dependency.
    assert any("pip install --no-deps ." in run for run in runs)


def test_the_final_image_has_no_compilers_and_runs_as_a_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    runs = " ".join(instructions(final, "RUN"))
    for tool in ("gcc", "g++", "clang", "build-essential", "make ", "cc ", "apt-get install", "pip install"):
        assert tool not in runs
    assert any(argument.startswith("--from=") for argument in instructions(final, "COPY"))
    (user,) = instructions(final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user lets Kubernetes check runAsNonRoot"
    assert int(uid) != 0


def test_the_final_image_listens_on_all_addresses_on_the_exposed_port() -> None:
    final = dockerfile_stages()[-1]
    env = " ".join(instructions(final, "ENV"))
    assert "PROXY_HOST=0.0.0.0" in env
    port = re.search(r"PROXY_PORT=(\d+)", env)
    assert port is not None
    assert instructions(final, "EXPOSE") == [port.group(1)]
    assert int(port.group(1)) == Config().port
    assert instructions(final, "STOPSIGNAL") == ["SIGTERM"]
    assert instructions(final, "ENTRYPOINT") == ['["python", "-m", "proxy"]']


def test_the_health_check_runs_the_script_that_asks_for_health() -> None:
    final = dockerfile_stages()[-1]
    (healthcheck,) = instructions(final, "HEALTHCHECK")
    assert "CMD" in healthcheck
    script = re.search(r'"(/[^"]+\.py)"', healthcheck)
    assert script is not None
    copies = [argument.split() for argument in instructions(final, "COPY")]
    assert ["deploy/healthcheck.py", script.group(1)] in copies
    assert "/health" in (ROOT / "deploy" / "healthcheck.py").read_text()


def copied_sources() -> list[str]:
    sources = []
    for stage in dockerfile_stages():
        for argument in instructions(stage, "COPY"):
            parts = argument.split()
            if not parts[0].startswith("--from="):
                sources.extend(parts[:-1])
    return sources


def test_every_copied_file_exists_and_passes_the_dockerignore() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    assert patterns[0] == "*", "an allow-list keeps secrets, caches and .git out of the build context"
    allowed = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    for source in copied_sources():
        source = source.rstrip("/")
        assert any(fnmatch.fnmatchcase(name, source) for name in allowed), source
        if source != LOCK and not set("*?[") & set(source):  # the lock is produced by the release tooling
            assert (ROOT / source).exists(), source


def test_the_lock_pins_exact_versions_when_present() -> None:
    lock = ROOT / LOCK
    if not lock.exists():
        pytest.skip(f"{LOCK} not generated in this checkout")
    requirements = [
        line.split("#")[0].strip().rstrip("\\").strip()
        for line in lock.read_text().splitlines()
        if line.split("#")[0].strip() and not line.strip().startswith(("-", "--hash"))
    ]
    assert requirements
    assert all("==" in requirement for requirement in requirements), requirements


# -- Kubernetes ------------------------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path.name, document


def one(kind: str) -> dict[str, Any]:
    (found,) = [document for _name, document in manifests() if document["kind"] == kind]
    return found


def deployment_container() -> dict[str, Any]:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def env_value(container: dict[str, Any], name: str) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == name:
            return str(entry["value"]) if "value" in entry else None
    return None


def test_every_manifest_parses_and_the_kustomization_lists_them_all() -> None:
    kinds = {document["kind"] for _name, document in manifests()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "CronJob"} <= kinds
    for name, document in manifests():
        assert {"apiVersion", "kind"} <= document.keys(), name
        assert document["kind"] == "Kustomization" or "name" in document["metadata"], name
    kustomization = one("Kustomization")
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_readiness_is_ready_and_liveness_is_health_on_the_proxy_port() -> None:
    container = deployment_container()
    (port,) = container["ports"]
    assert port["containerPort"] == int(env_value(container, "PROXY_PORT") or Config().port)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    assert env_value(container, "PROXY_HOST") == "0.0.0.0"


def test_the_service_reaches_the_pods_by_their_labels_and_named_port() -> None:
    deployment, service = one("Deployment"), one("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == deployment_container()["ports"][0]["name"]
    assert service["spec"].get("sessionAffinity", "None") == "None"


def prestop_pause_s(container: dict[str, Any]) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


def test_the_grace_period_covers_the_prestop_pause_the_drain_and_the_shutdown_grace() -> None:
    spec = one("Deployment")["spec"]["template"]["spec"]
    container = deployment_container()
    drain_s = float(env_value(container, "PROXY_DRAIN_TIMEOUT_S") or LIMITS.drain_timeout_s)
    assert drain_s >= LIMITS.drain_timeout_s, "the example keeps at least the default drain"
    pause_s = prestop_pause_s(container)
    assert pause_s > 0, "a preStop pause lets endpoints update before the drain starts"
    assert spec["terminationGracePeriodSeconds"] > pause_s + drain_s + LIMITS.shutdown_grace_s


def test_resources_have_requests_and_limits() -> None:
    for container in [deployment_container(), *cronjob_spec()["containers"]]:
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), container["name"]


def pod_specs() -> list[dict[str, Any]]:
    return [one("Deployment")["spec"]["template"]["spec"], cronjob_spec()]


def test_pods_run_as_non_root_with_a_read_only_root_and_no_capabilities() -> None:
    final = dockerfile_stages()[-1]
    image_uid = int(instructions(final, "USER")[0].split(":")[0])
    for spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == image_uid
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context.get("privileged", False) is False


def walk(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
    else:
        yield value


def test_keys_come_from_secrets_and_no_secret_value_is_inline() -> None:
    for name, document in manifests():
        assert document["kind"] != "Secret", f"{name}: create Secrets out of band, never in the repository"
        for value in walk(document):
            if isinstance(value, str):
                assert not CREDENTIAL.search(value), f"{name}: {value!r} looks like a credential"
    secret_env = [
        entry
        for spec in pod_specs()
        for container in spec["containers"]
        for entry in container.get("env", [])
        if re.search(r"KEY|TOKEN|SECRET|PASSWORD", entry["name"])
    ]
    assert {entry["name"] for entry in secret_env} >= {"OPENAI_API_KEY", "DEEPGRAM_API_KEY"}
    for entry in secret_env:
        assert "value" not in entry, entry["name"]
        assert "secretKeyRef" in entry["valueFrom"], entry["name"]


def test_the_deployment_uses_only_flags_and_variables_the_proxy_knows() -> None:
    container = deployment_container()
    args = container["args"]
    assert args[0] == "serve"
    _parser().parse_args(args[1:])  # an unknown flag exits 2 here
    known = (ROOT / "proxy" / "config.py").read_text() + (ROOT / "proxy" / "cli.py").read_text()
    for entry in container["env"]:
        assert f'"{entry["name"]}"' in known, entry["name"]


def test_the_disruption_budget_and_the_autoscaler_keep_two_pods_and_target_the_deployment() -> None:
    deployment, budget, autoscaler = one("Deployment"), one("PodDisruptionBudget"), one("HorizontalPodAutoscaler")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    args = deployment_container()["args"]
    max_sessions = int(args[args.index("--max-sessions") + 1])
    (sessions,) = [m["pods"] for m in autoscaler["spec"]["metrics"] if m["type"] == "Pods"]
    assert sessions["metric"]["name"] == "proxy_sessions_active"
    sources = "".join(path.read_text() for path in (ROOT / "proxy").rglob("*.py"))
    assert "proxy_sessions_active" in sources, "the autoscaler's metric must be one the proxy exports"
    assert 0 < int(sessions["target"]["averageValue"]) < max_sessions


def cronjob_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def test_the_canary_cronjob_runs_the_canary_against_the_service() -> None:
    cronjob = one("CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cronjob_spec()
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["image"] == deployment_container()["image"]
    command = container["command"]
    service = one("Service")["metadata"]["name"]
    assert command == ["python", "-m", "proxy", "canary", "--url", f"ws://{service}/openai", "--timeout", "20"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 20


# -- systemd ---------------------------------------------------------------------------------------------------


def unit() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (ROOT / "deploy" / "systemd" / "voice-agent-proxy.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_the_systemd_unit_drains_on_sigterm_within_its_stop_timeout() -> None:
    service = unit()["Service"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]
    environment = dict(item.split("=", 1) for value in service["Environment"] for item in shlex.split(value))
    drain_s = float(environment.get("PROXY_DRAIN_TIMEOUT_S", LIMITS.drain_timeout_s))
    assert float(service["TimeoutStopSec"][0]) > drain_s + LIMITS.shutdown_grace_s
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert " -m proxy serve" in service["ExecStart"][0]


def test_the_systemd_unit_reads_keys_from_a_file_and_is_hardened() -> None:
    sections = unit()
    service = sections["Service"]
    assert service["EnvironmentFile"] == ["/etc/voice-agent-proxy/env"]
    for value in service["Environment"]:
        assert not re.search(r"KEY|TOKEN|SECRET", value.split("=", 1)[0]), value
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "DynamicUser": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in hardening.items():
        assert service.get(key) == [value], key
    assert "@system-service" in service["SystemCallFilter"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]


# -- the health check script -----------------------------------------------------------------------------------


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = str(ROOT / "deploy" / "healthcheck.py")
    return subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.e2e
def test_the_health_check_passes_against_a_running_proxy_and_fails_against_none() -> None:
    from tests.test_cli import proxy_env, running_proxy

    with running_proxy() as (process, port):
        assert healthcheck(proxy_env(PROXY_PORT=str(port))).returncode == 0
        process.kill()
        process.wait(timeout=10)
        failed = healthcheck(proxy_env(PROXY_PORT=str(port)))
    assert failed.returncode == 1
    assert "health check failed" in failed.stderr


@pytest.mark.e2e
def test_the_health_check_speaks_https_when_the_proxy_serves_tls(tmp_path: Path) -> None:
    from tests.server.test_tls import make_certs
    from tests.server.test_tls_process import tls_proxy

    certs = make_certs(tmp_path)
    with tls_proxy(certs) as (process, port):
        env = {"PROXY_PORT": str(port), "PROXY_TLS_CERT": str(certs.cert_file)}
        assert healthcheck(env).returncode == 0
        assert healthcheck({"PROXY_PORT": str(port)}).returncode == 1  # plain http on the TLS port
        process.terminate()


# -- the guide -------------------------------------------------------------------------------------------------


def test_the_deployment_guide_is_linked_and_covers_every_deploy_file() -> None:
    assert "(docs/deployment.md)" in (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".service"):
            assert path.name in guide, path.name
    for word in ("--workers", "PROXY_WORKERS", "--tls-cert", "--trusted-proxies", "terminationGracePeriodSeconds"):
        assert word in guide, word
