"""Validators for the Kubernetes manifests under ``infra/k8s/``: each returns a list of problems, one line each.

- KubeRay kinds (``RayCluster``, ``RayJob``) against the ``openAPIV3Schema`` of KubeRay's CRDs vendored in
  ``schemas/`` (:data:`KUBERAY_RELEASE`), with :mod:`jsonschema`, plus a strict walk (:func:`unknown_keys`): the
  CRDs list ``properties`` without ``additionalProperties: false``, and the API server prunes unknown fields of a
  custom resource silently, so a typo such as ``rayStartParam`` would otherwise vanish; plus the admission rules
  KubeRay's operator applies in Go (:func:`kuberay_rule_problems`, a subset of ``validation.go``).
- Core kinds against the models of the ``kubernetes`` Python client (:func:`model_problems`): every key must be a
  field of the model, every value of the field's type (the client itself would drop unknown keys), and the
  client's own deserialiser then checks the required fields.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

#: The KubeRay release whose CRDs are vendored in ``schemas/`` (see ``schemas/NOTICE.md``).
KUBERAY_RELEASE = "v1.7.0"

#: (apiVersion, kind) of KubeRay's kinds -> vendored schema file.
CRD_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster-v1.json",
    ("ray.io/v1", "RayJob"): "rayjob-v1.json",
}

#: (apiVersion, kind) of the core kinds the manifests may use -> model of the kubernetes client.
CORE_MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("batch/v1", "CronJob"): "V1CronJob",
}

#: KubeRay's limits on names (ray-operator/controllers/ray/utils/constant.go): a RayCluster name is at most 53
#: characters, a RayJob's 6 fewer (the cluster it creates adds a suffix); both DNS-1035 labels.
MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6
#: Characters the API server appends to a ``generateName``.
GENERATED_SUFFIX = 5
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class Manifest:
    """One YAML document of a manifest file."""

    path: Path
    index: int
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        meta = self.doc.get("metadata") or {}
        return str(meta.get("name") or meta.get("generateName") or "?")

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index} {self.kind}/{self.name}"


def load_manifests(folder: Path = K8S) -> list[Manifest]:
    """Every YAML document of every ``*.yaml`` file under ``folder``, in file order (empty documents skipped)."""
    out = []
    for path in sorted(folder.rglob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append(Manifest(path, index, doc))
    return out


def manifest_problems(doc: Any) -> list[str]:
    """Everything wrong with one manifest: its kind, its schema, and KubeRay's admission rules."""
    if not isinstance(doc, dict):
        return [f"a manifest must be a mapping, got {type(doc).__name__}"]
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        problems = crd_problems(doc, crd_schema(*key))
        return problems or kuberay_rule_problems(doc)
    if key in CORE_MODELS:
        return model_problems(doc, CORE_MODELS[key])
    known = sorted(CRD_SCHEMAS) + sorted(CORE_MODELS)
    return [f"apiVersion/kind {key} has no schema here; known: {known}"]


# --- custom resources -----------------------------------------------------------------------------------------


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The vendored openAPIV3Schema of a KubeRay kind."""
    schema: dict[str, Any] = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    return schema


def _path(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or "(root)"


def crd_problems(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """A custom resource against its CRD schema (types, enums, required), strictly (no unknown keys).

    The schema leaves ``metadata`` to the API server, so it is checked as an ``ObjectMeta`` here.
    """
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{_path(err.absolute_path)}: {err.message}" for err in validator.iter_errors(doc)]
    problems += unknown_keys(schema, doc)
    if isinstance(doc.get("metadata"), dict):
        problems += model_problems(doc["metadata"], "V1ObjectMeta", path="metadata")
    return problems


def unknown_keys(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Keys of ``value`` that ``schema`` does not list, wherever it lists ``properties``.

    A mapping whose schema has ``additionalProperties`` (a map such as labels or rayStartParams) or
    ``x-kubernetes-preserve-unknown-fields`` takes any key; one with neither and no ``properties`` (free-form
    ``metadata``) is not walked.
    """
    problems: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        free = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                problems += unknown_keys(props[key], item, where)
            elif isinstance(extra, dict):
                problems += unknown_keys(extra, item, where)
            elif props is not None and not free:
                problems.append(f"{where}: unknown key{_did_you_mean(str(key), props)}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += unknown_keys(schema["items"], item, f"{path}[{i}]")
    return problems


def _did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {sorted(known)}"


# --- KubeRay's admission rules --------------------------------------------------------------------------------


def kuberay_rule_problems(doc: dict[str, Any]) -> list[str]:
    """The checks KubeRay's operator makes before it acts (``ray-operator/controllers/ray/utils/validation.go``
    at :data:`KUBERAY_RELEASE`) that a manifest can fail: names, containers, replica bounds, resources given
    twice, restart policies under autoscaler v2, and a RayJob's TTL, deadlines and retries."""
    kind, meta, spec = doc["kind"], doc.get("metadata", {}), doc.get("spec", {})
    problems = _name_problems(meta, MAX_RAYJOB_NAME if kind == "RayJob" else MAX_RAYCLUSTER_NAME)
    if kind == "RayCluster":
        return problems + cluster_rule_problems(spec, "spec")
    if spec.get("shutdownAfterJobFinishes") is not True and spec.get("ttlSecondsAfterFinished", 0) > 0:
        problems.append("spec.ttlSecondsAfterFinished needs spec.shutdownAfterJobFinishes: true")
    if "rayClusterSpec" not in spec and not spec.get("clusterSelector"):
        problems.append("spec: one of rayClusterSpec or clusterSelector must be set")
    for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if key in spec and spec[key] <= 0:
            problems.append(f"spec.{key} must be positive")
    if spec.get("backoffLimit", 0) < 0:
        problems.append("spec.backoffLimit must not be negative")
    if spec.get("submissionMode") == "SidecarMode" and "submitterPodTemplate" in spec:
        problems.append("spec.submitterPodTemplate is not supported in SidecarMode")
    if "rayClusterSpec" in spec:
        problems += cluster_rule_problems(spec["rayClusterSpec"], "spec.rayClusterSpec")
    return problems


def _name_problems(meta: dict[str, Any], limit: int) -> list[str]:
    if "name" in meta:
        name, length = str(meta["name"]), len(str(meta["name"]))
    else:
        name = str(meta.get("generateName", "")) + "a" * GENERATED_SUFFIX
        length = len(name)
    problems = []
    if length > limit:
        problems.append(f"metadata: the name ({length} characters) must be at most {limit}")
    if not _DNS1035.fullmatch(name):
        problems.append(f"metadata: the name {name!r} must be a DNS-1035 label")
    return problems


def cluster_rule_problems(spec: dict[str, Any], where: str) -> list[str]:
    """KubeRay's rules for a RayCluster spec (also a RayJob's rayClusterSpec)."""
    problems = []
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    v2 = autoscaling and (spec.get("autoscalerOptions") or {}).get("version", "v2") == "v2"
    groups = [("headGroupSpec", spec["headGroupSpec"])]
    groups += [(f"workerGroupSpecs[{i}]", g) for i, g in enumerate(spec.get("workerGroupSpecs", []))]
    for name, group in groups:
        pod = group["template"].get("spec", {})
        if not pod.get("containers"):
            problems.append(f"{where}.{name}: the pod template needs at least one container")
        params = group.get("rayStartParams", {})
        if group.get("resources") and any(
            params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")
        ):
            problems.append(f"{where}.{name}: resources given both in rayStartParams and in resources")
        if "labels" in params:
            problems.append(f"{where}.{name}: rayStartParams.labels is not supported; use labels")
        if v2 and pod.get("restartPolicy") not in (None, "Never"):
            problems.append(f"{where}.{name}: restartPolicy must be Never or unset with autoscaler v2")
        if name.startswith("worker"):
            low, high = group.get("minReplicas"), group.get("maxReplicas")
            if not autoscaling and (low is None or high is None):
                problems.append(f"{where}.{name}: minReplicas and maxReplicas are needed without autoscaling")
            if (low is not None and low < 0) or (high is not None and high < 0):
                problems.append(f"{where}.{name}: replicas must not be negative")
            if low is not None and high is not None and low > high:
                problems.append(f"{where}.{name}: minReplicas {low} is greater than maxReplicas {high}")
    idle = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds", 0)
    if idle < 0:
        problems.append(f"{where}.autoscalerOptions.idleTimeoutSeconds must not be negative")
    return problems


# --- core kinds -----------------------------------------------------------------------------------------------

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
    "object": (object,),
}


def model_problems(value: Any, type_name: str, path: str = "") -> list[str]:
    """``value`` against the kubernetes client's model ``type_name`` (``V1CronJob``, ``list[V1Container]``,
    ``dict[str, str]``...), strictly; at the top level also the client's own checks of required fields."""
    problems = _walk_model(value, type_name, path)
    if not problems and not path:
        problems = _deserialize_problems(value, type_name)
    return problems


def _walk_model(value: Any, type_name: str, path: str) -> list[str]:
    import kubernetes.client

    where = path or "(root)"
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        inner = type_name[len("list[") : -1]
        return [p for i, item in enumerate(value) for p in _walk_model(item, inner, f"{path}[{i}]")]
    if type_name.startswith(("dict[", "dict(")):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [p for key, item in value.items() for p in _walk_model(item, inner, f"{path}.{key}")]
    if type_name in _PRIMITIVES:
        wrong_bool = type_name in ("int", "float") and isinstance(value, bool)
        if wrong_bool or not isinstance(value, _PRIMITIVES[type_name]):
            return [f"{where}: expected {type_name}, got {type(value).__name__} {value!r}"]
        return []
    model = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {type(value).__name__}"]
    fields = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in fields:
            problems.append(f"{here}: unknown key of {type_name}{_did_you_mean(str(key), fields)}")
        else:
            problems += _walk_model(item, model.openapi_types[fields[key]], here)
    return problems


class _Response:
    """What ``ApiClient.deserialize`` reads: a JSON body."""

    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body)


def _deserialize_problems(value: Any, type_name: str) -> list[str]:
    import kubernetes.client

    try:
        kubernetes.client.ApiClient().deserialize(_Response(value), type_name)
    except (ValueError, TypeError) as err:
        return [f"(root): the kubernetes client refuses it as {type_name}: {err}"]
    return []


# --- walking pod templates ------------------------------------------------------------------------------------


def pod_templates(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod a RayCluster, RayJob or CronJob manifest describes."""
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        yield "spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"]["spec"]
        return
    if doc["kind"] == "RayJob":
        if "submitterPodTemplate" in spec:
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"]["spec"]
        spec, prefix = spec.get("rayClusterSpec", {}), "spec.rayClusterSpec"
    else:
        prefix = "spec"
    if "headGroupSpec" in spec:
        yield f"{prefix}.headGroupSpec.template", spec["headGroupSpec"]["template"]["spec"]
    for i, group in enumerate(spec.get("workerGroupSpecs", [])):
        yield f"{prefix}.workerGroupSpecs[{i}].template", group["template"]["spec"]
