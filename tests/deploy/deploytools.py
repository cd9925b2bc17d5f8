"""Helpers for the deploy file tests: tools, compose interpolation, kustomize, PromQL.

Nothing here runs a container: the files are checked against their schemas and the
real tools that exist without one (promtool, prometheus, systemd-analyze, kubectl's
built-in kustomize), and the commands they run are run here in the same way.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
KUBE = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "syncd-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def require_tool(name: str, why: str) -> str:
    """The tool's path; outside CI a missing tool skips, in CI it fails.

    ``scripts/test`` installs the Debian ``prometheus`` package (promtool,
    prometheus) when it runs as root, so in CI these tests always run.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({why}); scripts/test installs it as root"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- compose

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]+)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expr = match.group("braced") or match.group("plain")
        for sep in (":-", "-"):
            if sep in expr:
                name, default = expr.split(sep, 1)
                got = env.get(name)
                if got is None or (sep == ":-" and got == ""):
                    return default
                return got
        if expr not in env:
            raise KeyError(f"compose variable {expr} has no default and is not set")
        return env[expr]

    return _VAR.sub(one, value)


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it: YAML anchors merged, variables filled."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    doc: dict[str, Any] = interpolate(raw, env or {})
    return doc


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` (or ``--name value``) in a command list."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    raise KeyError(name)


# --------------------------------------------------------------------------- kustomize


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for what our manifests use.

    Maps merge key by key (``null`` deletes); lists of maps that all carry a
    ``name`` (containers, env, volumes, ports...) merge item by item on it;
    any other list is replaced. test_kubernetes compares the result with
    ``kubectl kustomize`` where kubectl is installed.
    """
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        # Like kustomize: the patch's items first (merged with the base's of that
        # name), then the base's other items in their order.
        originals = {i["name"]: i for i in base}
        merged = [
            _merge(originals[i["name"]], i) if i["name"] in originals else copy.deepcopy(i)
            for i in patch
        ]
        patched = {i["name"] for i in patch}
        merged += [copy.deepcopy(i) for i in base if i["name"] not in patched]
        return merged
    return copy.deepcopy(patch)


def _containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    if template:
        pod = template.get("spec", {})
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _set_image(doc: dict[str, Any], images: list[dict[str, Any]]) -> None:
    for container in _containers(doc):
        name, _, tag = container["image"].partition(":")
        for rule in images:
            if rule["name"] == name:
                new = rule.get("newName", name)
                container["image"] = (
                    f"{new}:{rule.get('newTag', tag)}" if (rule.get("newTag") or tag) else new
                )


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization (resources, components, namespace, images, patches)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(kustomize(path) if path.is_dir() else load_yaml_docs(path))
    for entry in spec.get("components", []):
        docs.extend(kustomize((directory / entry).resolve()))
    for patch in spec.get("patches", []):
        for change in load_yaml_docs(directory / patch["path"]):
            targets = [
                n
                for n, d in enumerate(docs)
                if d["kind"] == change["kind"]
                and d["metadata"]["name"] == change["metadata"]["name"]
            ]
            assert len(targets) == 1, f"patch {patch['path']} matches {len(targets)} resources"
            docs[targets[0]] = _merge(docs[targets[0]], change)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for doc in docs:
        _set_image(doc, spec.get("images", []))
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


# --------------------------------------------------------------------------- PromQL

# Grafana's variables, replaced by what they become at query time.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$source": ".*"}


def dashboard_expressions(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every Prometheus target, Grafana variables filled in."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            found.append((panel["title"], expr))
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def alert_expressions(path: Path = ALERTS) -> list[tuple[str, str]]:
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


_METRIC = re.compile(r"\b(syncd_[a-z_]+|up)\b(?=\s*[{\[)]|\s*$)")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (histogram buckets by their _bucket name)."""
    return set(_METRIC.findall(expr))
