"""infra/: every manifest parses and validates, and runs commands that exist.

Kubernetes kinds are checked with kubernetes-validate's strict schemas; KubeRay kinds with a small
vendored schema (tests/schemas) whose pod templates use the same Kubernetes schemas; the cluster
launcher config with Ray's own validator; the Dockerfile with hadolint. Every job entrypoint must
name a real ``jobs/`` module and only options its command line accepts.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S_VERSION = "1.31"  # the oldest Kubernetes these manifests promise to work on
IMAGE = "registry.example.com/deepfake-scan"


def k8s_docs() -> list[tuple[str, dict]]:
    """(name, document) for every document of every manifest, and RayJob templates inside
    ConfigMaps (what the nightly CronJob creates)."""
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            assert isinstance(doc, dict), f"{path.name}#{i} is not a mapping"
            docs.append((f"{path.name}#{i}:{doc['kind']}", doc))
            for key, text in (doc.get("data") or {}).items() if doc["kind"] == "ConfigMap" else ():
                if key.endswith((".yaml", ".yml")):
                    docs.append((f"{path.name}#{i}:{key}", yaml.safe_load(text)))
    return docs


DOCS = k8s_docs()


@functools.cache
def kuberay_validator(kind: str) -> jsonschema.Draft202012Validator:
    from kubernetes_validate.utils import schema_contents

    k8s = schema_contents(
        f"kubernetes-json-schema/v{_k8s_schema_version()}-local-strict/_definitions.json",
        K8S_VERSION,
    )
    schema = json.loads((ROOT / "tests" / "schemas" / "kuberay-ray.io-v1.json").read_text())
    assert kind in schema["$defs"], f"no schema for ray.io/v1 {kind}"
    registry = Registry().with_resources(
        [(k8s["$id"], Resource.from_contents(k8s)), (schema["$id"], Resource.from_contents(schema))]
    )
    ref = {"$ref": f"{schema['$id']}#/$defs/{kind}"}  # one kind: errors name the exact field
    return jsonschema.Draft202012Validator(ref, registry=registry)


def _k8s_schema_version() -> str:
    from kubernetes_validate.utils import all_versions

    return [v for v in all_versions() if v.startswith(K8S_VERSION + ".")][-1]


def validate(doc: dict) -> None:
    if doc["apiVersion"].startswith("ray.io/"):
        errors = sorted(kuberay_validator(doc["kind"]).iter_errors(doc), key=lambda e: e.path)
        assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message[:300]}" for e in errors]
    else:
        import kubernetes_validate

        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def ray_specs(doc: dict) -> list[dict]:
    """The RayClusterSpecs inside a RayCluster, RayJob or RayCronJob."""
    spec = doc.get("spec", {})
    spec = spec.get("jobTemplate", spec)
    spec = spec.get("rayClusterSpec", spec)
    return [spec] if "headGroupSpec" in spec else []


def entrypoints() -> list[tuple[str, str]]:
    found = []
    for name, doc in DOCS:
        spec = doc.get("spec", {})
        spec = spec.get("jobTemplate", spec)
        if "entrypoint" in spec:
            found.append((name, spec["entrypoint"]))
    return found


# -- schemas ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[n for n, _ in DOCS])
def test_manifest_validates_against_its_schema(name, doc):
    validate(doc)


def test_the_kinds_the_issue_asks_for_are_all_there():
    kinds = {(n.split("#")[0], d["kind"]) for n, d in DOCS}
    assert ("raycluster.yaml", "RayCluster") in kinds
    rayjobs = [d for n, d in DOCS if d["kind"] == "RayJob"]
    commands = [shlex.split(d["spec"]["entrypoint"])[2] for d in rayjobs]
    assert {"jobs.scan", "jobs.train", "jobs.nightly"} <= set(commands)
    assert ("nightly-cronjob.yaml", "CronJob") in kinds
    assert ("nightly-raycronjob.yaml", "RayCronJob") in kinds


def test_the_validator_rejects_what_kubernetes_would_reject():
    (doc,) = [d for n, d in DOCS if d["kind"] == "RayCluster"]
    broken = copy.deepcopy(doc)
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    with pytest.raises(AssertionError, match="rayStartParams"):
        validate(broken)
    broken = copy.deepcopy(doc)
    broken["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imag"] = "x"
    with pytest.raises(AssertionError, match="imag"):
        validate(broken)
    (cron,) = [d for n, d in DOCS if d["kind"] == "CronJob"]
    broken = copy.deepcopy(cron)
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = 3
    with pytest.raises(Exception, match="restartPolicy|not of type"):
        validate(broken)


# -- consistency ------------------------------------------------------------------------------
def test_clusters_pin_this_ray_and_this_image_with_gpus_on_the_workers():
    specs = [s for _, d in DOCS for s in ray_specs(d)]
    assert len(specs) >= 5
    for spec in specs:
        assert spec["rayVersion"] == ray.__version__
        assert spec.get("authOptions", {}).get("mode") == "token"
        (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
        assert head["image"] == f"{IMAGE}:0.1.0-cpu"
        for group in spec["workerGroupSpecs"]:
            (worker,) = group["template"]["spec"]["containers"]
            assert worker["image"] == f"{IMAGE}:0.1.0-cuda"
            assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_two_nightly_schedules_run_the_same_job():
    (template,) = [d for n, d in DOCS if n.endswith(":rayjob.yaml")]
    (cron,) = [d for n, d in DOCS if d["kind"] == "RayCronJob"]
    assert cron["spec"]["jobTemplate"] == template["spec"]
    (k8s_cron,) = [d for n, d in DOCS if d["kind"] == "CronJob"]
    assert k8s_cron["spec"]["schedule"] == cron["spec"]["schedule"]


@functools.cache
def job_options(module: str) -> frozenset[str]:
    """The options ``python -m <module>`` accepts, from its own --help."""
    env = {**os.environ, "COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}
    r = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return frozenset(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", r.stdout))


@pytest.mark.parametrize(("name", "entrypoint"), entrypoints(), ids=[n for n, _ in entrypoints()])
def test_entrypoint_runs_a_real_job_with_real_options(name, entrypoint):
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs."), entrypoint
    module = argv[2]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"no module {module}"
    used = {a.split("=", 1)[0] for a in argv[3:] if a.startswith("--")}
    assert used <= job_options(module), f"{module} has no {sorted(used - job_options(module))}"


# -- cluster launcher and image ---------------------------------------------------------------
def test_aws_cluster_launcher_config_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks first
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [t for name, t in types.items() if t["node_config"]["InstanceType"].startswith("g")]
    assert gpu and gpu[0]["max_workers"] > gpu[0]["min_workers"] == 0
    assert config["docker"]["worker_image"] == f"{IMAGE}:0.1.0-cuda"
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"][1:])


def test_dockerfile_lints_clean_and_pins_what_pyproject_pins():
    dockerfile = INFRA / "Dockerfile"
    r = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), re.M))
    pins = dict(
        re.findall(r'^\s*"([\w-]+)==([^"]+)",', (ROOT / "pyproject.toml").read_text(), re.M)
    )
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["VARIANT"] == "cpu"
    text = dockerfile.read_text()
    assert "cpu)" in text and "cuda)" in text and "pip install ." in text
