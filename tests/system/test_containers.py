"""The container files and the light `make run`: static checks (no Docker engine needed) and a fresh-venv boot."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from samples import SERVICES
from tests.support.processes import REPO_ROOT, ManagedProcess, base_env, free_port, http_status

DEV_TOOLS = ("pytest", "mypy", "ruff", "playwright", "py-spy", "hypothesis", "requests", "honcho")


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name (continuation lines joined, comments dropped)."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            current = stages.setdefault(name, [])
        current.append((word.upper(), rest.strip()))
    return stages


def procfile_web() -> list[str]:
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line.partition(":")[2])
    raise AssertionError("the Procfile has no web process")


def test_the_image_runs_the_procfiles_web_command() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "gateway"  # `docker build .` builds the gateway
    commands = [rest for word, rest in stages["gateway"] if word == "CMD"]
    assert len(commands) == 1
    assert json.loads(commands[0]) == procfile_web()  # exec form, word for word
    assert procfile_web() == shlex.split((REPO_ROOT / "Procfile.dev").read_text().splitlines()[0].partition(":")[2])


def test_the_image_is_slim_non_root_and_checks_health() -> None:
    stages = dockerfile_stages()
    base = stages["runtime"][0][1]
    version = (REPO_ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(rf"python:{re.escape(version)}(\.\d+)?-slim(-\w+)? AS runtime", base), base
    runtime = " ".join(rest for word, rest in stages["runtime"] if word == "RUN")
    assert "pip install -r requirements.txt" in runtime and "requirements-dev" not in runtime
    for stage in ("gateway", "samples"):
        users = [rest for word, rest in stages[stage] if word == "USER"]
        assert users and users[-1] not in ("root", "0"), stage
    gateway = stages["gateway"]
    checks = [rest for word, rest in gateway if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0] and "PORT" in checks[0]
    assert ("ENV", "PORT=3000") in gateway
    copied = " ".join(rest for word, rest in gateway if word == "COPY")
    assert "tests" not in copied and "requirements-dev" not in copied


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "requirements-dev.txt"} <= ignored
    for needed in ("gateway", "blueprints", "samples", "requirements.txt", "app.py", "wsgi.py", "gunicorn.conf.py"):
        assert needed not in ignored


def test_compose_runs_redis_the_samples_and_the_gateway() -> None:
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "samples", "gateway"}
    stages = dockerfile_stages()
    for name in ("samples", "gateway"):
        assert services[name]["build"]["target"] in stages
    env = services["gateway"]["environment"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    from gateway.config.settings import BUILTIN_SERVICES

    for name, _, variable, _, _ in BUILTIN_SERVICES:
        assert env[variable] == f"http://samples:{SERVICES[name].port}", variable
    assert "--host" in services["samples"]["command"] and "0.0.0.0" in services["samples"]["command"]
    assert services["gateway"]["ports"] == ["3000:3000"]


def requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            names.append(re.split(r"[=<>!~\[; ]", line)[0].lower())
    return names


def test_runtime_requirements_carry_no_dev_or_run_tools() -> None:
    runtime = requirement_names(REPO_ROOT / "requirements.txt")
    assert not set(runtime) & set(DEV_TOOLS)
    assert requirement_names(REPO_ROOT / "requirements-run.txt") == ["honcho"]
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-run.txt").read_text()
    assert "-r requirements-run.txt" in (REPO_ROOT / "requirements-dev.txt").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    run_rule = re.search(r"^run: (.*)$", makefile, re.M)
    assert run_rule is not None and run_rule.group(1).strip() == "$(RUN_STAMP)"
    stamp_rule = re.search(r"^\$\(RUN_STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp_rule is not None and "requirements-run.txt" in stamp_rule.group(1)
    assert "requirements-dev" not in stamp_rule.group(1)


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_the_gateway_boots_from_a_fresh_venv_with_requirements_txt_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(REPO_ROOT / "requirements.txt")],
                          capture_output=True, text=True, timeout=300)  # pip's cache makes a re-run quick
    assert done.returncode == 0, done.stderr[-2000:]
    # The sample services (what `make run` starts besides the gateway) need nothing more either.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import samples; samples.create_app('order-service')"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-2000:]
    port = free_port()
    command = procfile_web()
    argv = [str(venv / "bin" / command[0]), *command[1:]]
    env = {**base_env(), "PORT": str(port), "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HEALTH_CHECK_INTERVAL": "0"}
    gateway = ManagedProcess("fresh-gateway", argv, log_dir=tmp_path / "logs", env=env)
    gateway.start()
    try:
        gateway.wait_until(lambda: http_status(f"http://127.0.0.1:{port}", "/health") == 200, 30, "GET /health")
        assert http_status(f"http://127.0.0.1:{port}", "/ready") == 200
    finally:
        gateway.stop(leader_only=True)
