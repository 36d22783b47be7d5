"""`kustomize build`, offline, for the subset of kustomize that deploy/kubernetes uses.

No kustomize binary runs in the suite, so the manifests are rendered here. Supported:

- ``resources``: YAML files (several documents each) and directories holding a
  kustomization.yaml, rendered first;
- ``namespace``: set on every namespaced resource;
- ``images``: ``name`` matched against container and init container images, with ``newName``,
  ``newTag`` or ``digest``;
- ``configMapGenerator`` and ``secretGenerator``: ``envs`` files and ``literals``, ``behavior``
  ``create`` or ``merge``; the generated names get kustomize's content-hash suffix (its
  algorithm, not checked against a kustomize binary) and the references to them are rewritten
  (``envFrom``, ``env[].valueFrom``, ``volumes``);
- ``patches`` given by ``path``, as strategic merge patches on the resource of the same kind and
  name: maps merge (``null`` deletes a key); the lists Kubernetes merges by a key (containers,
  initContainers, env, volumes, volumeMounts) merge on that key; every other list is replaced.

Anything else in a kustomization (a field, a patch directive, a list Kubernetes merges on a key
this does not know) raises, so the manifests cannot use a feature this renderer would get wrong.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "images",
        "configMapGenerator",
        "secretGenerator",
        "patches",
    }
)
GENERATOR_FIELDS = frozenset({"name", "behavior", "envs", "literals"})
CLUSTER_SCOPED = frozenset({"Namespace"})

# Strategic merge: the lists Kubernetes merges on a key (patchMergeKey in its API types), for
# the fields this renderer handles; the ones it does not are refused rather than replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
UNSUPPORTED_MERGE_LISTS = frozenset(
    {
        "ports",
        "imagePullSecrets",
        "topologySpreadConstraints",
        "hostAliases",
        "ephemeralContainers",
        "volumeDevices",
        "finalizers",
    }
)


class KustomizeError(Exception):
    """A kustomization this renderer cannot render faithfully."""


@dataclass
class Rendered:
    resources: list[Resource] = field(default_factory=list)
    # Generated ConfigMaps and Secrets, by their name before the hash suffix.
    generated: set[tuple[str, str]] = field(default_factory=set)

    def find(self, kind: str, name: str) -> Resource | None:
        for resource in self.resources:
            if resource["kind"] == kind and resource["metadata"]["name"] == name:
                return resource
        return None


def build(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` prints, in order."""
    rendered = _render(directory.resolve())
    _hash_generated_names(rendered)
    return rendered.resources


def _render(directory: Path) -> Rendered:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    rendered = Rendered()
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            base = _render(path.resolve())
            rendered.resources += base.resources
            rendered.generated |= base.generated
        else:
            rendered.resources += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(key, []):
            _generate(rendered, directory, kind, generator)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path:` is supported")
        for document in yaml.safe_load_all((directory / patch["path"]).read_text()):
            _apply_patch(rendered, document)
    if "namespace" in kustomization:
        for resource in rendered.resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        _set_image(rendered.resources, image)
    return rendered


def read_env_file(path: Path) -> dict[str, str]:
    """kustomize's reading of an ``envs`` file: ``KEY=value`` lines, the value everything after
    the first ``=``; blank lines and lines starting with ``#`` skipped. A line without ``=``
    (kustomize then reads the value from its own environment) is refused."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", key):
            raise KustomizeError(f"{path}:{number}: not a KEY=value line")
        values[key] = value
    return values


def _generate(rendered: Rendered, directory: Path, kind: str, generator: dict[str, Any]) -> None:
    unknown = set(generator) - GENERATOR_FIELDS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported generator fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        data |= read_env_file(directory / env_file)
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = rendered.find(kind, name)
    if behavior == "merge":
        if existing is None or (kind, name) not in rendered.generated:
            raise KustomizeError(f"{directory}: no generated {kind} {name} to merge into")
        _put_data(existing, _data(existing) | data)
        return
    if behavior != "create" or existing is not None:
        raise KustomizeError(f"{directory}: {kind} {name}: unsupported behavior {behavior!r}")
    resource: Resource = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    if kind == "Secret":
        resource["type"] = "Opaque"
    _put_data(resource, data)
    rendered.resources.append(resource)
    rendered.generated.add((kind, name))


def _data(resource: Resource) -> dict[str, str]:
    data = resource.get("data", {})
    if resource["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
    return dict(data)


def _put_data(resource: Resource, data: dict[str, str]) -> None:
    if resource["kind"] == "Secret":
        resource["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        resource["data"] = data


def _apply_patch(rendered: Rendered, patch: Resource) -> None:
    target = rendered.find(patch["kind"], patch["metadata"]["name"])
    if target is None:
        raise KustomizeError(f"patch for a missing {patch['kind']} {patch['metadata']['name']}")
    merged = strategic_merge(target, patch)
    target.clear()
    target.update(merged)


def strategic_merge(original: Any, patch: Any, key: str | None = None) -> Any:
    """``patch`` merged into ``original`` (neither is changed)."""
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise KustomizeError(f"patch directives are not supported: {sorted(patch)}")
        if not isinstance(original, dict):
            return copy.deepcopy(patch)
        merged = copy.deepcopy(original)
        for k, v in patch.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = strategic_merge(original.get(k), v, k)
        return merged
    if isinstance(patch, list):
        if key in UNSUPPORTED_MERGE_LISTS:
            raise KustomizeError(f"merging the list {key!r} is not supported")
        merge_key = MERGE_KEYS.get(key or "")
        if merge_key is None or not isinstance(original, list):
            return copy.deepcopy(patch)
        merged_list = copy.deepcopy(original)
        for item in patch:
            index = next(
                (i for i, old in enumerate(merged_list) if old[merge_key] == item[merge_key]), None
            )
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return patch


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod template's spec of a workload (Deployment, Job …), or None."""
    spec = resource.get("spec", {})
    if resource["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template.get("spec") if isinstance(template, dict) else None


def containers(resource: Resource) -> list[dict[str, Any]]:
    """Init containers and containers of a workload's pod template."""
    spec = pod_spec(resource) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _set_image(resources: list[Resource], image: dict[str, Any]) -> None:
    name = image["name"]
    for resource in resources:
        for container in containers(resource):
            current = container["image"]
            if not re.fullmatch(rf"{re.escape(name)}([:@].*)?", current):
                continue
            repository = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{repository}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{repository}:{image['newTag']}"
            else:
                container["image"] = repository + current[len(name) :]


def _hash_generated_names(rendered: Rendered) -> None:
    renames: dict[tuple[str, str], str] = {}
    for resource in rendered.resources:
        kind, name = resource["kind"], resource["metadata"]["name"]
        if (kind, name) in rendered.generated:
            hashed = f"{name}-{_content_hash(resource)}"
            resource["metadata"]["name"] = hashed
            renames[kind, name] = hashed
    for resource in rendered.resources:
        spec = pod_spec(resource)
        if spec is None:
            continue
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                ref = volume["configMap"]
                ref["name"] = renames.get(("ConfigMap", ref["name"]), ref["name"])
            if "secret" in volume:
                ref = volume["secret"]
                ref["secretName"] = renames.get(("Secret", ref["secretName"]), ref["secretName"])
        for container in containers(resource):
            refs = [
                *(e.get("valueFrom", {}) for e in container.get("env", [])),
                *container.get("envFrom", []),
            ]
            for ref in refs:
                for field_name, kind in (
                    ("configMapRef", "ConfigMap"),
                    ("configMapKeyRef", "ConfigMap"),
                    ("secretRef", "Secret"),
                    ("secretKeyRef", "Secret"),
                ):
                    if field_name in ref:
                        target = ref[field_name]
                        target["name"] = renames.get((kind, target["name"]), target["name"])


def _content_hash(resource: Resource) -> str:
    # kustomize: sha256 over the JSON of kind, name, data (and a Secret's type), Go's encoding
    # (sorted keys, no spaces); the first 10 hex digits with the vowel-making ones swapped out.
    encoded: dict[str, Any] = {
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
        "data": resource.get("data", {}),
    }
    if resource["kind"] == "Secret":
        encoded["type"] = resource["type"]
    digest = hashlib.sha256(
        json.dumps(encoded, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))
