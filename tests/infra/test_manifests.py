"""The KubeRay manifests under infra/k8s/: every document against its schema (KubeRay's CRDs, vendored; core kinds
through the kubernetes client's models), KubeRay's admission rules, the cross-references between them (the spec's
ConfigMap, the S3 Secret, the schedule's copy of the RayJob), the run spec they carry, and every command they run.
The validators are shown to fail on a typo, a wrong type and a missing field."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pimc_ray.cli import main
from pimc_ray.runs import RunSpec
from tests.infra.dockerfiles import pins, pyproject
from tests.infra.kube import (
    CORE_MODELS,
    CRD_SCHEMAS,
    REPO,
    Manifest,
    crd_schema,
    load_manifests,
    manifest_problems,
    pod_templates,
    unknown_keys,
)

BIN = Path(sys.executable).parent
MANIFESTS = load_manifests()
README = (REPO / "README.md").read_text()
#: The S3 settings every Ray container gets from the Secret (pimc_ray.storage reads them).
S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
#: The commands KubeRay v1.7.0 runs in the images: `ray start` (pod.go), the autoscaler sidecar (pod.go,
#: BuildAutoscalerContainer) and the K8sJobMode submitter (common/job.go, BuildJobSubmitCommand), with the options
#: it passes.
KUBERAY_COMMANDS = {
    ("ray", "start"): ("--head", "--address", "--block"),
    ("ray", "kuberay-autoscaler"): ("--cluster-name", "--cluster-namespace"),
    ("ray", "job", "submit"): ("--address", "--no-wait", "--submission-id", "--runtime-env-json"),
    ("ray", "job", "status"): ("--address",),
    ("ray", "job", "logs"): ("--address", "--follow"),
}


def only(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of ``kind`` (and ``name``)."""
    found = [m.doc for m in MANIFESTS if m.kind == kind and (name is None or m.name == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def help_text(*command: str) -> str:
    """``command --help`` run from the test environment's bin (exit code 0), its output."""
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{' '.join(command)} --help: exit {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def containers(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{where}.containers[{i}]", c)
        for where, pod in pod_templates(doc)
        for i, c in enumerate(pod.get("containers", []))
    ]


def spec_text() -> str:
    return str(only("ConfigMap", "pimc-spec")["data"]["spec.yaml"])


def entrypoint() -> list[str]:
    return shlex.split(only("RayJob")["spec"]["entrypoint"])


# --- every document against its schema ------------------------------------------------------------------------


def test_the_manifests_are_there() -> None:
    kinds = sorted(m.kind for m in MANIFESTS)
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",
            "ConfigMap",
            "RayCluster",
            "RayJob",
            "ServiceAccount",
            "Role",
            "RoleBinding",
        ]
        + ["CronJob"]
    )


@pytest.mark.parametrize("manifest", MANIFESTS, ids=str)
def test_manifest_is_valid(manifest: Manifest) -> None:
    assert manifest_problems(manifest.doc) == []


def test_no_secret_manifest_and_no_literal_credentials() -> None:
    """Credentials come only from a Secret created by hand (README): no Secret manifest, no literal AWS_ value."""
    assert not [m for m in MANIFESTS if m.kind == "Secret"]
    for manifest in MANIFESTS:
        for where, container in containers(manifest.doc):
            for var in container.get("env", []):
                if var["name"].startswith("AWS_"):
                    assert "value" not in var, f"{manifest} {where}: {var['name']} is a literal"


def test_every_object_in_one_namespace() -> None:
    namespace = only("Namespace")["metadata"]["name"]
    assert {m.doc["metadata"].get("namespace") for m in MANIFESTS if m.kind != "Namespace"} == {namespace}


# --- the Ray cluster -------------------------------------------------------------------------------------------


def test_raycluster_runs_pyprojects_ray_and_autoscales() -> None:
    spec = only("RayCluster")["spec"]
    assert spec["rayVersion"] == str(pins()["ray"]) == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert group["maxReplicas"] > 0


def test_images_and_gpus_by_group() -> None:
    """The head and CPU workers run the CPU image, GPU workers the CUDA image with a GPU limit; tags follow the
    project's version."""
    version = pyproject()["project"]["version"]
    spec = only("RayCluster")["spec"]
    groups = {"head": spec["headGroupSpec"]} | {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for name, group in groups.items():
        (container,) = group["template"]["spec"]["containers"]
        flavour = "cuda" if name == "gpu" else "cpu"
        assert container["image"] == f"ghcr.io/pimc-ray/pimc-ray:{version}-{flavour}", name
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert ("nvidia.com/gpu" in limits) is (name == "gpu"), name
        assert limits == requests, f"{name}: Ray counts limits; requests below them oversubscribe nodes"


def test_gpu_group_fits_the_specs_workers() -> None:
    """A GPU pod holds one of the spec's workers: its GPUs and its CPUs (encoder + readers)."""
    spec = RunSpec.from_mapping(yaml.safe_load(spec_text()))
    (gpu,) = [g for g in only("RayCluster")["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    res = spec.resources
    assert int(limits["nvidia.com/gpu"]) >= res.gpus_per_worker > 0
    assert float(limits["cpu"]) >= res.cpus_per_worker + res.read_cpus
    assert gpu["maxReplicas"] * int(limits["nvidia.com/gpu"]) >= res.workers * res.gpus_per_worker


def test_ray_start_params_are_ray_start_options() -> None:
    options = set(re.findall(r"--[a-z0-9-]+", help_text("ray", "start")))
    for manifest in (m for m in MANIFESTS if m.kind in ("RayCluster", "RayJob")):
        spec = manifest.doc["spec"].get("rayClusterSpec", manifest.doc["spec"])
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            for key in group.get("rayStartParams", {}):
                assert f"--{key}" in options, f"{manifest}: rayStartParams {key!r} is no `ray start` option"


def test_s3_settings_from_the_secret_in_every_ray_container() -> None:
    """Tile workers publish straight to the output: head and workers all get the four settings, from one Secret,
    whose name and keys the README's `kubectl create secret` line gives."""
    secrets = set()
    for manifest in (m for m in MANIFESTS if m.kind in ("RayCluster", "RayJob")):
        for where, container in containers(manifest.doc):
            env = {var["name"]: var for var in container.get("env", [])}
            assert set(S3_ENV) <= set(env), f"{manifest} {where}"
            for name in S3_ENV:
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert ref["key"] == name
                secrets.add(ref["name"])
    (secret,) = secrets
    section = README.split("## Running on Kubernetes", 1)[1].split("\n## ", 1)[0]
    command = re.search(rf"kubectl create secret generic {secret} .*?(?:\n\n|```)", section, re.DOTALL)
    assert command, f"README does not show how to create the Secret {secret}"
    for name in S3_ENV:
        assert f"--from-literal={name}=" in command.group(0)


# --- the run: RayJob and its spec ------------------------------------------------------------------------------


def test_rayjob_creates_the_raycluster_of_raycluster_yaml() -> None:
    assert only("RayJob")["spec"]["rayClusterSpec"] == only("RayCluster")["spec"]


def test_rayjob_runs_pimc_run_execute_on_the_mounted_spec() -> None:
    job = only("RayJob")
    spec = job["spec"]
    assert entrypoint()[:3] == ["pimc", "run", "execute"]
    spec_path = Path(entrypoint()[3])
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["submissionMode"] == "K8sJobMode" and "clusterSelector" not in spec
    # the driver runs on the head: the spec must be mounted there, from a ConfigMap that exists, with that key
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if spec_path.is_relative_to(m["mountPath"])]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    configmap = only("ConfigMap", volume["configMap"]["name"])
    assert str(spec_path.relative_to(mount["mountPath"])) in configmap["data"]


def test_pimc_run_execute_takes_the_entrypoints_options() -> None:
    """The entrypoint's command exists with every option it passes (needs `pimc run execute`, issue 14)."""
    text = help_text("pimc", "run", "execute")
    for option in (word for word in entrypoint() if word.startswith("--")):
        assert option in text, f"`pimc run execute` has no {option}"


def test_spec_in_the_configmap_is_a_valid_run_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(spec_text())
    spec = RunSpec.from_mapping(data, source="pimc-spec")
    assert spec.output.startswith("s3://")
    assert spec.period.last_months, "a monthly schedule needs a rolling period"
    assert spec.catalog.snapshot is None, (
        "a frozen item list would make every month read the first one's items"
    )
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text())
    assert main(["run", "validate", str(path)]) == 0
    assert "europe-monthly" in capsys.readouterr().out


def test_spec_in_the_configmap_is_the_europe_example_made_monthly() -> None:
    """The same run as infra/specs/europe-2024.yaml but for the keys a monthly schedule changes."""
    changed = {"name", "period", "output"}
    monthly = yaml.safe_load(spec_text())
    europe = yaml.safe_load((REPO / "infra" / "specs" / "europe-2024.yaml").read_text())
    europe["catalog"].pop("snapshot")
    assert {k: v for k, v in monthly.items() if k not in changed} == {
        k: v for k, v in europe.items() if k not in changed
    }


def test_spec_plans_within_budget_at_the_entrypoints_prices(tmp_path: Path) -> None:
    """`pimc run execute` plans first and refuses a run over budget: at the entrypoint's prices the spec fits
    (offline: acquisitions assumed, items not counted)."""
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text())
    prices = [w for i, w in enumerate(entrypoint()) if i >= 4]
    code = main(["run", "plan", str(path), *prices, "--no-items", "--out", str(tmp_path / "plan")])
    assert code == 0
    assert (tmp_path / "plan" / "plan.json").exists()


# --- the schedule ----------------------------------------------------------------------------------------------


def test_cronjob_creates_the_rayjob_monthly() -> None:
    cron = only("CronJob")["spec"]
    minute, hour, day, month, weekday = cron["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and 1 <= int(day) <= 28 and month == weekday == "*"
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"] + container["args"]
    assert command[:2] == ["kubectl", "create"], "create, not apply: the RayJob has a generateName"
    assert "generateName" in only("RayJob")["metadata"]
    (path,) = [a.split("=", 1)[1] for a in command if a.startswith("--filename=")]
    (mount,) = [m for m in container["volumeMounts"] if Path(path).is_relative_to(m["mountPath"])]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = only("ConfigMap", volume["configMap"]["name"])
    copy_of_rayjob = configmap["data"][str(Path(path).relative_to(mount["mountPath"]))]
    # what `kubectl create configmap --from-file=rayjob.yaml=infra/k8s/rayjob.yaml` puts there (schedule.yaml)
    assert copy_of_rayjob == (REPO / "infra" / "k8s" / "rayjob.yaml").read_text(), "refresh pimc-rayjob"


def test_scheduler_may_create_rayjobs_and_nothing_else() -> None:
    pod = only("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    account = only("ServiceAccount", pod["serviceAccountName"])
    (binding,) = [
        m.doc
        for m in MANIFESTS
        if m.kind == "RoleBinding"
        and {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "pimc-ray"}
        in m.doc["subjects"]
    ]
    role = only(binding["roleRef"]["kind"], binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_kubectl_create_takes_the_cronjobs_options() -> None:
    container = only("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    done = subprocess.run(
        ["kubectl", *container["args"][:1], "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for option in (a.split("=")[0] for a in container["args"] if a.startswith("--")):
        assert f"{option}=" in done.stdout, option


# --- the commands KubeRay runs in the images -------------------------------------------------------------------


@pytest.mark.parametrize("command", KUBERAY_COMMANDS, ids=" ".join)
def test_kuberay_commands_exist(command: tuple[str, ...]) -> None:
    text = help_text(*command)
    for option in KUBERAY_COMMANDS[command]:
        assert option in text, f"`{' '.join(command)}` has no {option}"


def test_submitter_finds_python() -> None:
    """KubeRay's submitter waits for the dashboard with `python -c` (utils.BasePythonHealthCommand)."""
    assert (BIN / "python").exists()


# --- the validators fail where they should ---------------------------------------------------------------------


def mutated(kind: str, change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(only(kind))
    change(doc)
    return doc


def test_a_typo_in_a_kuberay_key_is_rejected() -> None:
    def typo(doc: dict[str, Any]) -> None:
        head = doc["spec"]["headGroupSpec"]
        head["rayStartParam"] = head.pop("rayStartParams")

    assert manifest_problems(mutated("RayCluster", typo)) == [
        "spec.headGroupSpec.rayStartParam: unknown key; did you mean 'rayStartParams'?"
    ]


def test_the_strict_walk_is_needed() -> None:
    """The CRD schema alone accepts the typo (it sets no additionalProperties: false)."""
    import jsonschema

    def typo(doc: dict[str, Any]) -> None:
        doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")

    doc = mutated("RayJob", typo)
    schema = crd_schema("ray.io/v1", "RayJob")
    jsonschema.validate(doc, schema)  # passes
    assert unknown_keys(schema, doc) == [
        "spec.shutdownAfterJobFinish: unknown key; did you mean 'shutdownAfterJobFinishes'?"
    ]


def test_a_wrong_type_in_a_kuberay_manifest_is_rejected() -> None:
    def wrong(doc: dict[str, Any]) -> None:
        doc["spec"]["workerGroupSpecs"][1]["maxReplicas"] = "16"
        doc["spec"]["autoscalerOptions"]["upscalingMode"] = "Eager"

    assert manifest_problems(mutated("RayCluster", wrong)) == [
        "spec.autoscalerOptions.upscalingMode: 'Eager' is not one of ['Default', 'Aggressive', 'Conservative']",
        "spec.workerGroupSpecs[1].maxReplicas: '16' is not of type 'integer'",
    ]


def test_a_typo_deep_in_a_pod_template_is_rejected() -> None:
    def typo(doc: dict[str, Any]) -> None:
        container = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        container["volumeMount"] = container.pop("volumeMounts")

    assert manifest_problems(mutated("RayJob", typo)) == [
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].volumeMount: unknown key; did you "
        "mean 'volumeMounts'?"
    ]


def test_kuberays_admission_rules_are_checked() -> None:
    def wrong(doc: dict[str, Any]) -> None:
        doc["metadata"]["generateName"] = "Europe-" + "x" * 40
        doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["minReplicas"] = 20
        doc["spec"]["shutdownAfterJobFinishes"] = False

    assert manifest_problems(mutated("RayJob", wrong)) == [
        "metadata: the name (52 characters) must be at most 47",
        f"metadata: the name {'Europe-' + 'x' * 40 + 'aaaaa'!r} must be a DNS-1035 label",
        "spec.ttlSecondsAfterFinished needs spec.shutdownAfterJobFinishes: true",
        "spec.rayClusterSpec.workerGroupSpecs[1]: minReplicas 20 is greater than maxReplicas 16",
    ]


def test_core_kinds_reject_unknown_keys_wrong_types_and_missing_fields() -> None:
    def typo(doc: dict[str, Any]) -> None:
        doc["spec"]["schedul"] = doc["spec"].pop("schedule")

    def wrong(doc: dict[str, Any]) -> None:
        doc["spec"]["successfulJobsHistoryLimit"] = "3"
        doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] = "create"

    def missing(doc: dict[str, Any]) -> None:
        del doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["name"]

    assert manifest_problems(mutated("CronJob", typo)) == [
        "spec.schedul: unknown key of V1CronJobSpec; did you mean 'schedule'?"
    ]
    assert manifest_problems(mutated("CronJob", wrong)) == [
        "spec.successfulJobsHistoryLimit: expected int, got str '3'",
        "spec.jobTemplate.spec.template.spec.containers[0].args: expected a list, got str",
    ]
    assert manifest_problems(mutated("CronJob", missing)) == [
        "(root): the kubernetes client refuses it as V1CronJob: Invalid value for `name`, must not be `None`"
    ]


def test_an_unknown_kind_is_rejected() -> None:
    problems = manifest_problems({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"}})
    assert len(problems) == 1 and "has no schema here" in problems[0]
    assert ("ray.io/v1", "RayService") not in CRD_SCHEMAS and ("v1", "Pod") not in CORE_MODELS
