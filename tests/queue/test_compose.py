"""docker-compose.yml is valid Compose and every service runs a real entry point.

No Docker engine is needed: the file is checked against the Compose specification's
JSON schema (bundled with check-jsonschema, so offline), and each stylefarm command
is parsed by the real `stylefarm` argument parser and run with --help.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from cli.main import COMMANDS, build_parser
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stylefarm_service_runs_a_real_subcommand(compose: dict) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    ours = [(name, svc["command"]) for name, svc in compose["services"].items()
            if "build" in svc]
    assert {name for name, _ in ours} >= {"api", "worker-gpu0", "worker-gpu1"}
    for name, command in ours:
        assert command[0] in scripts, f"{name}: {command[0]} is not a [project.scripts] entry"
        assert command[1] in COMMANDS, f"{name}: no `stylefarm {command[1]}` subcommand"
        args = build_parser().parse_args(command[1:])  # exits 2 on an unknown option
        assert args.command == command[1]
        shown = subprocess.run([sys.executable, "-m", "cli.main", command[1], "--help"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, f"{name}: {shown.stderr}"


def test_services_have_what_a_farm_needs(compose: dict) -> None:
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    assert "healthcheck" in services["postgres"]
    assert any(v.endswith("/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    gpus = []
    for name in ("worker-gpu0", "worker-gpu1"):
        [device] = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        gpus += device["device_ids"]
        assert services[name]["environment"] is services["api"]["environment"]  # one anchor
        assert "data:/data" in services[name]["volumes"]
    assert sorted(gpus) == ["0", "1"]
    environment = services["api"]["environment"]
    assert float(environment["STYLEFARM_RECONCILE_INTERVAL"]) > 0  # workers reconcile
    known = {f"STYLEFARM_{spec.name.upper()}" for spec in fields(Settings)}
    assert {k for k in environment if k.startswith("STYLEFARM_")} <= known  # no typos
    assert "data:/data" in services["api"]["volumes"]
    assert (ROOT / services["api"]["build"] / "Dockerfile").is_file()
