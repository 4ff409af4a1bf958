"""deploy/ checked offline: every Kubernetes manifest against the Kubernetes schemas
(kubernetes-validate, strict), the compose files against the compose spec (check-jsonschema's
vendored schema), the Dockerfile with hadolint, the systemd units with `systemd-analyze verify`,
and every lockfleet command line in them against lockfleet's own argument parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lockfleet.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
COMPOSE = sorted(DEPLOY.glob("compose*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is missing under CI=true (the test extras and .ci/install-deps provide it)")
    pytest.skip(f"{name} is not installed")


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    assert len(MANIFESTS) >= 6
    kinds = set()
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            kinds.add(doc["kind"])
            try:
                kubernetes_validate.validate(doc, "1.30.0", strict=True)
            except ValidationError as exc:
                pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap"} <= kinds


def test_a_broken_manifest_is_caught() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    doc = next(yaml.safe_load_all((DEPLOY / "k8s" / "30-worker.yaml").read_text()))
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = "health"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_compose_files_follow_the_compose_spec(tmp_path: Path) -> None:
    tool = _tool("check-jsonschema")
    res = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", *map(str, COMPOSE)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE[0].read_text().replace("restart: unless-stopped", "restart: [always]"))
    res = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(broken)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0


def test_dockerfile_lints_clean_and_builds_the_core_in_a_first_stage() -> None:
    tool = _tool("hadolint")
    dockerfile = DEPLOY / "Dockerfile"
    res = subprocess.run([tool, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) == 2 and stages[0][1] == "build"
    assert "COPY --from=build" in text and "no compiled core" in text and re.search(r"^USER\s+\d+", text, re.M)


def test_systemd_units_verify(tmp_path: Path) -> None:
    tool = _tool("systemd-analyze")
    lockfleet = Path(sys.executable).with_name("lockfleet")
    for unit in UNITS:   # the units name /usr/local/bin/lockfleet: verify them against this install
        text = unit.read_text().replace("/usr/local/bin/lockfleet", str(lockfleet))
        (tmp_path / unit.name).write_text(text.replace("/usr/bin/python3", sys.executable))
    res = subprocess.run([tool, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def _command_lines() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for path in COMPOSE:
        doc = yaml.safe_load(path.read_text())
        for name, svc in doc["services"].items():
            if str(svc.get("image", "")).startswith("lockfleet"):
                out.append((f"{path.name}:{name}", svc.get("command") or []))
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                if c["image"].startswith("lockfleet"):
                    out.append((f"{path.name}:{c['name']}", [a.replace("$(POD_NAME)", "pod-0") for a in c["args"]]))
    cmd = re.search(r"^CMD\s+(\[.*?\])\s*$", (DEPLOY / "Dockerfile").read_text().replace("\\\n", " "), re.M | re.S)
    assert cmd, "the Dockerfile's CMD"
    out.append(("Dockerfile:CMD", json.loads(cmd.group(1))))
    for unit in UNITS:
        text = unit.read_text().replace("\\\n", " ")
        line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
        argv = shlex.split(line[len("ExecStart="):].replace("${LOCKFLEET_BUS}", "nats://n1:4222")
                           .replace("%H", "host-1"))
        if argv[0].endswith("/lockfleet"):
            out.append((unit.name, argv[1:]))
    return out


def test_every_command_line_in_deploy_is_one_lockfleet_accepts() -> None:
    lines = _command_lines()
    roles = {argv[0] for _where, argv in lines if argv}
    assert {"serve", "worker", "authority", "bus-archive"} <= roles
    parser = build_parser()
    for where, argv in lines:
        if not argv:    # the image's default command
            continue
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: lockfleet does not accept: {' '.join(argv)}")
        assert args.command == argv[0], where
