"""deploy/kubernetes, rendered offline (tests/support/kustomize.py) as `kubectl apply -k` would
send it: valid for the Kubernetes versions we promise, every variable a real setting, probes and
ports that match the app, a termination grace that covers the worker's drain, pods locked down."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import AliasChoices, SecretStr
from starlette.routing import Match

from app.config import Environment, Settings
from app.main import create_app
from tests.support.kustomize import Resource, build, containers, pod_spec, read_env_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE_CONFIG = DEPLOY / "base" / "config.env"
SECRETS_EXAMPLE = DEPLOY / "overlays" / "production" / "secrets.env.example"

# The oldest minor the manifests promise to work on, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")

# After the drain the worker cancels what is left, gives back those leases, and closes its
# status streams, HTTP client and database pool before it exits.
WORKER_CLEANUP_MARGIN_S = 15

# What secrets.env holds once an operator has filled it in.
FILLED_SECRETS = {
    "FOLEY_DATABASE_URL": "postgresql://foley:s3cr3t-db@postgres.example.internal:5432/foley",
    "FAL_KEY": "fal-key-id:fal-key-secret",
    "FOLEY_ADMIN_TOKEN": "4f0c1e9b7a5d3c2e1f0a9b8c7d6e5f40",
    "FOLEY_WEBHOOK_SECRET": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
}


def setting_names() -> dict[str, str]:
    """Every environment variable Settings reads, with the field it sets."""
    names: dict[str, str] = {}
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice: field_name for choice in alias.choices if isinstance(choice, str)}
        else:
            names[f"FOLEY_{field_name.upper()}"] = field_name
    return names


SETTINGS = setting_names()
SECRET_FIELDS = {
    name for name, info in Settings.model_fields.items() if info.annotation == SecretStr | None
} | {"database_url"}


@pytest.fixture(scope="module")
def base() -> list[Resource]:
    return build(DEPLOY / "base")


def _rendered(tmp_path_factory: pytest.TempPathFactory, overlay_name: str) -> list[Resource]:
    """An overlay as an operator renders it: the production secrets.env filled in from the
    example."""
    copy = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    production = copy / "overlays" / "production"
    example = read_env_file(production / "secrets.env.example")
    assert set(FILLED_SECRETS) == set(example), "FILLED_SECRETS follows secrets.env.example"
    (production / "secrets.env").write_text(
        "".join(f"{k}={v}\n" for k, v in FILLED_SECRETS.items())
    )
    return build(copy / "overlays" / overlay_name)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> list[Resource]:
    return _rendered(tmp_path_factory, "production")


@pytest.fixture(scope="module")
def queue_autoscaling(tmp_path_factory: pytest.TempPathFactory) -> list[Resource]:
    return _rendered(tmp_path_factory, "queue-autoscaling")


def by_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def commented_settings(path: Path) -> dict[str, str]:
    """``# NAME=value`` lines: a setting left at its default, shown with it."""
    found = re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(), flags=re.MULTILINE)
    return dict(found)


def environment(resources: list[Resource], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from its envFrom ConfigMaps and Secrets and its env."""
    values: dict[str, str] = {}
    sources = {**by_kind(resources, "ConfigMap"), **by_kind(resources, "Secret")}
    for ref in container.get("envFrom", []):
        (kind_ref,) = ref.values()
        source = sources[kind_ref["name"]]
        if source["kind"] == "Secret":
            values |= {k: base64.b64decode(v).decode() for k, v in source["data"].items()}
        else:
            values |= source["data"]
    values |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return values


def deployment(resources: list[Resource], component: str) -> Resource:
    return by_kind(resources, "Deployment")[f"foley-{component}"]


def main_container(resources: list[Resource], component: str) -> dict[str, Any]:
    spec = pod_spec(deployment(resources, component))
    assert spec is not None
    (container,) = (c for c in spec["containers"] if c["name"] == component)
    return container


# --- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("which", ["base", "production", "queue_autoscaling"])
def test_every_manifest_is_valid_for_kubernetes(
    which: str, version: str, request: pytest.FixtureRequest
) -> None:
    resources: list[Resource] = request.getfixturevalue(which)
    assert resources
    for resource in resources:
        # strict: a field the schema does not know (a typo, a field of another version) fails;
        # a kind without a schema raises too.
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_validation_rejects_an_unknown_field(base: list[Resource]) -> None:
    broken = deployment(base, "worker")
    spec = pod_spec(broken)
    assert spec is not None
    spec["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_overlay_renders_what_production_needs(production: list[Resource]) -> None:
    kinds = {(r["kind"], r["metadata"]["name"].rsplit("-", 1)[0]) for r in production}
    assert {
        ("Namespace", "foley"),
        ("ConfigMap", "foley-config"),
        ("Secret", "foley-secrets"),
        ("Deployment", "foley"),
        ("Service", "foley"),
        ("PodDisruptionBudget", "foley"),
        ("HorizontalPodAutoscaler", "foley"),
        ("NetworkPolicy", "foley"),
        ("ServiceAccount", "foley"),
    } <= kinds
    namespaced = [r for r in production if r["kind"] != "Namespace"]
    assert all(r["metadata"].get("namespace") == "foley" for r in namespaced)
    for resource in production:
        for container in containers(resource):
            assert container["image"] == "registry.example.com/foley:0.1.0", container["name"]


# --- settings ------------------------------------------------------------------------------------


def test_every_variable_set_is_a_setting(base: list[Resource], production: list[Resource]) -> None:
    named: set[str] = set(commented_settings(BASE_CONFIG)) | set(
        commented_settings(SECRETS_EXAMPLE)
    )
    for resource in [*base, *production]:
        if resource["kind"] in ("ConfigMap", "Secret"):
            named |= set(resource["data"])
        for container in containers(resource):
            named |= {e["name"] for e in container.get("env", [])}
    assert named
    assert sorted(named - set(SETTINGS)) == []


def test_every_setting_has_its_line(base: list[Resource]) -> None:
    """Each setting is in the ConfigMap's file or the Secret's example, set or commented: an
    operator sees every knob in one place, and a new setting must take its place there."""
    listed = (
        set(read_env_file(BASE_CONFIG))
        | set(commented_settings(BASE_CONFIG))
        | set(read_env_file(SECRETS_EXAMPLE))
        | set(commented_settings(SECRETS_EXAMPLE))
    )
    fields_listed = {SETTINGS[name] for name in listed}
    assert sorted(set(Settings.model_fields) - fields_listed) == []


def test_secrets_are_in_the_secret_only(production: list[Resource]) -> None:
    config = {SETTINGS[n] for n in read_env_file(BASE_CONFIG)} | {
        SETTINGS[n] for n in commented_settings(BASE_CONFIG)
    }
    secrets = {SETTINGS[n] for n in read_env_file(SECRETS_EXAMPLE)} | {
        SETTINGS[n] for n in commented_settings(SECRETS_EXAMPLE)
    }
    assert config & SECRET_FIELDS == set()
    assert secrets == SECRET_FIELDS
    for config_map in by_kind(production, "ConfigMap").values():
        assert {SETTINGS[n] for n in config_map["data"]} & SECRET_FIELDS == set()


def test_a_commented_setting_shows_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n in SETTINGS]:
        monkeypatch.delenv(name)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, shown in commented_settings(BASE_CONFIG).items():
        field_name = SETTINGS[name]
        default = getattr(defaults, field_name)
        if shown == "":
            assert default in (None, "", []), name
        else:
            given = Settings(_env_file=None, **{field_name: shown})  # type: ignore[call-arg, arg-type]
            assert getattr(given, field_name) == default, name


def test_no_value_carries_a_comment() -> None:
    # kustomize keeps everything after `=`: "30s # seconds" would be the value.
    for path in [BASE_CONFIG, SECRETS_EXAMPLE, *DEPLOY.glob("overlays/*/config.env")]:
        for name, value in read_env_file(path).items():
            assert "#" not in value, f"{path.name}: {name}"


@pytest.mark.parametrize("component", ["api", "worker"])
def test_the_production_settings_load(
    production: list[Resource], component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a pod's environment holds passes the settings' production checks (no placeholder
    secret, a database URL, valid values)."""
    for name in [n for n in os.environ if n in SETTINGS]:
        monkeypatch.delenv(name)
    spec = pod_spec(deployment(production, component))
    assert spec is not None
    for container in [*spec["initContainers"], *spec["containers"]]:
        with monkeypatch.context() as env:
            for name, value in environment(production, container).items():
                env.setenv(name, value)
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.env is Environment.production
        assert settings.storage_backend == "s3" and settings.s3_bucket
        assert settings.database_url == FILLED_SECRETS["FOLEY_DATABASE_URL"]


# --- the app's routes, ports, probes, shutdown ---------------------------------------------------


def test_the_api_probes_are_routes_of_the_app(production: list[Resource], tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]

    def routed(path: str) -> bool:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "path_params": {}}
        return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)

    api = main_container(production, "api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert not routed("/no-such-probe")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert routed(api[probe]["httpGet"]["path"]), probe


def test_the_api_port_is_the_one_it_listens_on(production: list[Resource]) -> None:
    api = main_container(production, "api")
    command = api["command"]
    listens = int(command[command.index("--port") + 1])
    (port,) = api["ports"]
    assert port["containerPort"] == listens
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"]["port"] == port["name"]
    (service,) = by_kind(production, "Service").values()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    policy = by_kind(production, "NetworkPolicy")["foley-api"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [listens]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {listens}\n" in dockerfile
    assert f'"--port", "{listens}"' in dockerfile


def test_the_worker_has_time_to_drain(production: list[Resource]) -> None:
    worker = deployment(production, "worker")
    env = environment(production, main_container(production, "worker"))
    configured = env.get("FOLEY_WORKER_SHUTDOWN_GRACE")
    given = {"worker_shutdown_grace": configured} if configured else {}
    settings = Settings(_env_file=None, **given)  # type: ignore[call-arg, arg-type]
    grace = settings.worker_shutdown_grace.total_seconds()
    spec = pod_spec(worker)
    assert spec is not None
    assert spec["terminationGracePeriodSeconds"] >= grace + WORKER_CLEANUP_MARGIN_S


def test_the_api_has_time_to_answer_held_requests(production: list[Resource]) -> None:
    """After its preStop pause, a stopping API finishes what it holds: a `Prefer: wait` job
    creation for up to FOLEY_PREFER_WAIT_MAX."""
    spec = pod_spec(deployment(production, "api"))
    assert spec is not None
    api = main_container(production, "api")
    pause = api["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    configured = environment(production, api).get("FOLEY_PREFER_WAIT_MAX")
    given = {"prefer_wait_max": configured} if configured else {}
    settings = Settings(_env_file=None, **given)  # type: ignore[call-arg, arg-type]
    held = settings.prefer_wait_max.total_seconds()
    assert spec["terminationGracePeriodSeconds"] > int(pause[1]) + held


# --- order and references ------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["api", "worker"])
def test_every_pod_migrates_before_it_starts(production: list[Resource], component: str) -> None:
    spec = pod_spec(deployment(production, component))
    assert spec is not None
    (migrate,) = spec["initContainers"]
    assert migrate["command"] == ["foley", "migrate"]
    assert migrate["image"] == spec["containers"][0]["image"]
    assert migrate["envFrom"] == spec["containers"][0]["envFrom"]


def test_every_reference_resolves(production: list[Resource]) -> None:
    deployments = by_kind(production, "Deployment")
    named = {(r["kind"], r["metadata"]["name"]) for r in production}
    for d in deployments.values():
        spec = pod_spec(d)
        assert spec is not None
        assert ("ServiceAccount", spec["serviceAccountName"]) in named
        assert (
            d["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )
        for container in containers(d):
            for ref in container["envFrom"]:
                ((kind, target),) = ref.items()
                kind = {"configMapRef": "ConfigMap", "secretRef": "Secret"}[kind]
                assert (kind, target["name"]) in named, target
    for hpa in by_kind(production, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        assert "replicas" not in deployments[hpa["spec"]["scaleTargetRef"]["name"]]["spec"]
    selectors = [
        *(
            p["spec"]["selector"]["matchLabels"]
            for p in by_kind(production, "PodDisruptionBudget").values()
        ),
        *(
            p["spec"]["podSelector"]["matchLabels"]
            for p in by_kind(production, "NetworkPolicy").values()
        ),
        *(s["spec"]["selector"] for s in by_kind(production, "Service").values()),
    ]
    for selector in selectors:
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in deployments.values()
        ), selector


# --- locked down ---------------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["api", "worker"])
def test_pods_run_locked_down(production: list[Resource], component: str) -> None:
    spec = pod_spec(deployment(production, component))
    assert spec is not None
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    uid = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert uid is not None, "the image runs as a numeric user"
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid[1]), int(uid[2]))
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    # Service links would put FOLEY_API_* variables, inside the settings' prefix, in every pod.
    assert spec["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in containers(deployment(production, component)):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        for resource in ("cpu", "memory"):
            assert resource in container["resources"]["requests"], container["name"]
            assert resource in container["resources"]["limits"], container["name"]
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"]
        if container["name"] == component:
            data_dir = environment(production, container)["FOLEY_DATA_DIR"]
            assert "emptyDir" in mounts[data_dir]


def test_workers_can_scale_on_the_queue(
    production: list[Resource], queue_autoscaling: list[Resource]
) -> None:
    """The queue-autoscaling overlay is production with the workers' autoscaler on the jobs
    waiting (an external metric the gateway exports), CPU kept beside it."""
    hpa = by_kind(queue_autoscaling, "HorizontalPodAutoscaler")["foley-worker"]
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(kinds) == {"External", "Resource"}
    name = kinds["External"]["external"]["metric"]["name"]
    assert name == "foley_queue_depth"
    gauges = (ROOT / "app" / "telemetry" / "gauges.py").read_text()
    assert f'"{name}"' in gauges  # a metric the API exports (tests/e2e/test_operations.py)
    rules = (
        DEPLOY / "overlays" / "queue-autoscaling" / "prometheus-adapter-rules.yaml"
    ).read_text()
    assert f"as: {name}" in rules
    # everything else as production renders it
    others = [
        r
        for r in queue_autoscaling
        if r["metadata"]["name"] != "foley-worker" or r["kind"] != "HorizontalPodAutoscaler"
    ]
    expected = [
        r
        for r in production
        if r["metadata"]["name"] != "foley-worker" or r["kind"] != "HorizontalPodAutoscaler"
    ]
    assert others == expected
    base_hpa = by_kind(production, "HorizontalPodAutoscaler")["foley-worker"]
    assert hpa["spec"]["behavior"] == base_hpa["spec"]["behavior"]
    assert hpa["spec"]["maxReplicas"] == base_hpa["spec"]["maxReplicas"]
