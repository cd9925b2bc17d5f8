"""deploy/kubernetes: rendered like kustomize, checked against the Kubernetes schemas.

The schemas come with the kubernetes-validate package (strict: unknown fields are
errors). Rendering is done by tests/deploy/deploytools.kustomize; where kubectl is
installed its built-in kustomize renders too, and both must agree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from syncd.config import load_settings
from tests.deploy.deploytools import KUBE, by_kind, kustomize

# The oldest Kubernetes still commonly run, and the newest the package knows.
VERSIONS = ("1.28.0", "1.37.0")
BASE = KUBE / "base"
EXAMPLE = KUBE / "overlays" / "example"
SERVICEMONITOR = KUBE / "components" / "servicemonitor"


def with_servicemonitor(tmp_path: Path) -> Path:
    """The example overlay with its commented ServiceMonitor component enabled, as a user would."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBE, tree)
    kustomization = tree / "overlays" / "example" / "kustomization.yaml"
    text = kustomization.read_text()
    enabled = text.replace("# components:\n#   - ", "components:\n  - ")
    assert enabled != text
    kustomization.write_text(enabled)
    return kustomization.parent


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("name", ["base", "example", "example+servicemonitor"])
def test_manifests_match_the_kubernetes_schemas(name: str, tmp_path: Path) -> None:
    directory = {"base": BASE, "example": EXAMPLE}.get(name) or with_servicemonitor(tmp_path)
    docs = kustomize(directory)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no published schema; checked against the Service below
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_wrong_field() -> None:
    deployment = by_kind(kustomize(BASE))[("Deployment", "syncd")]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


@pytest.mark.parametrize("name", ["base", "example", "example+servicemonitor"])
def test_our_rendering_agrees_with_kubectl_kustomize(name: str, tmp_path: Path) -> None:
    directory = {"base": BASE, "example": EXAMPLE}.get(name) or with_servicemonitor(tmp_path)
    theirs = kubectl_kustomize(directory)
    if theirs is None:
        pytest.skip("kubectl is not installed: rendered by the test's kustomize logic only")
    assert by_kind(kustomize(directory)) == by_kind(theirs)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def test_the_deployment_is_what_production_needs() -> None:
    docs = by_kind(kustomize(EXAMPLE))
    deployment = docs[("Deployment", "syncd")]
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = pod_spec(deployment)
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/syncd:0.1.0"
    assert container["args"] == ["run"]  # no --migrate: the Job migrates
    http = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # the overlay raised the memory limit, the rest comes from the base
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "384Mi"},
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["SYNCD_LOG_LEVEL"]["value"] == "warning"
    assert env["SYNCD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "syncd",
        "key": "database-url",
    }
    # non-root, read-only root, nothing extra
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108
    assert volumes[mounts["/etc/syncd"]]["configMap"]["name"] == "syncd-config"
    assert volumes[mounts["/run/secrets/syncd"]]["secret"]["secretName"] == "syncd"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(http)
    assert annotations["prometheus.io/path"] == "/metrics"

    service = docs[("Service", "syncd")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    pdb = docs[("PodDisruptionBudget", "syncd")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    for doc in docs.values():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "syncd", doc["kind"]


def test_the_migration_job_migrates_with_the_same_image_config_and_secret() -> None:
    docs = by_kind(kustomize(EXAMPLE))
    job = pod_spec(docs[("Job", "syncd-migrate")])
    daemon = pod_spec(docs[("Deployment", "syncd")])
    (migrate,) = job["containers"]
    (run,) = daemon["containers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == run["image"]
    assert job["restartPolicy"] in ("OnFailure", "Never")
    assert {e["name"]: e for e in migrate["env"]}["SYNCD_DATABASE_URL"] == {
        e["name"]: e for e in run["env"]
    }["SYNCD_DATABASE_URL"]
    assert migrate["volumeMounts"] == run["volumeMounts"]
    assert job["volumes"] == daemon["volumes"]
    assert migrate["securityContext"] == run["securityContext"]
    # The Job's pods are not the Deployment's: its selector must not pick them up.
    job_labels = docs[("Job", "syncd-migrate")]["spec"]["template"]["metadata"]["labels"]
    selector = docs[("Deployment", "syncd")]["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job_labels.items()


def test_the_servicemonitor_scrapes_the_service_port(tmp_path: Path) -> None:
    docs = by_kind(kustomize(with_servicemonitor(tmp_path)))
    monitor = docs[("ServiceMonitor", "syncd")]
    service = docs[("Service", "syncd")]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    # The job label is the Service name, which the alerts select on (job="syncd").
    assert service["metadata"]["name"] == "syncd"
    assert 'job="syncd"' in (KUBE.parent / "prometheus" / "alerts.yml").read_text()


@pytest.mark.parametrize("directory", [BASE, EXAMPLE], ids=["base", "example"])
def test_the_configmap_is_a_config_syncd_accepts_with_the_secret_mounted(
    directory: Path, tmp_path: Path
) -> None:
    """syncd's own loader on the ConfigMap, with the Secret's keys as files (as mounted)."""
    docs = by_kind(kustomize(directory))
    secret = docs[("Secret", "syncd")]["stringData"]
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in secret.items():
        (secrets_dir / key).write_text(value + "\n")
    text = docs[("ConfigMap", "syncd-config")]["data"]["syncd.toml"]
    assert "/run/secrets/syncd/" in text
    (tmp_path / "syncd.toml").write_text(text.replace("/run/secrets/syncd/", f"{secrets_dir}/"))
    settings = load_settings(
        config_path=tmp_path / "syncd.toml",
        environ={"SYNCD_DATABASE_URL": secret["database-url"]},
    )
    assert settings.database_url.startswith("postgresql+psycopg://")
    container = pod_spec(docs[("Deployment", "syncd")])["containers"][0]
    http = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert (settings.daemon.host, settings.daemon.port) == ("0.0.0.0", http)  # noqa: S104
    assert {s.kind for s in settings.sources} == {"doorflow", "intserv"}
    # every key the config reads is in the Secret, and the Secret has no stale key
    read = {
        line.split("/run/secrets/syncd/")[1].rstrip('"')
        for line in text.splitlines()
        if "/run/secrets/syncd/" in line
    }
    assert read == set(secret) - {"database-url"}
