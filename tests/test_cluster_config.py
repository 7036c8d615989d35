"""The cluster configurations: cluster.yaml (Ray cluster launcher, AWS) and the KubeRay
manifests in k8s/. No cloud and no Kubernetes are reachable here, so these tests check what
can be checked offline: Ray's own schema and the checks `ray up` runs before it contacts
AWS, the node types, the image, and that every file the commands name exists.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from segray.config import Config
from segray.settings import JOBS
from segray.settings.command_line import parser

ROOT = Path(__file__).parents[1]
CLUSTER = ROOT / "cluster.yaml"
RAYJOB = ROOT / "k8s" / "rayjob.yaml"
RAYCRONJOB = ROOT / "k8s" / "raycronjob.yaml"

IMAGE = re.compile(r"^rayproject/ray:(?P<version>2\.60\.\d+)-py311-gpu$")
# GPUs per instance of the AWS types the comments suggest (and their neighbours).
AWS_GPUS = {
    "g4dn.xlarge": 1, "g4dn.12xlarge": 4, "g4dn.metal": 8,
    "g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1, "g5.16xlarge": 1,
    "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8,
    "g6.xlarge": 1, "g6.2xlarge": 1, "g6.4xlarge": 1, "g6.8xlarge": 1, "g6.16xlarge": 1,
    "g6.12xlarge": 4, "g6.24xlarge": 4, "g6.48xlarge": 8,
    "g6e.xlarge": 1, "g6e.2xlarge": 1, "g6e.12xlarge": 4, "g6e.48xlarge": 8,
    "p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8,
    "p4d.24xlarge": 8, "p4de.24xlarge": 8, "p5.48xlarge": 8, "p5e.48xlarge": 8, "p5en.48xlarge": 8,
}
GPU_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p4de.", "p5.", "p5e.", "p5en.")


def load(path: Path):
    return yaml.safe_load(path.read_text())


def locked_ray_version() -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == "ray")


@pytest.fixture(scope="module")
def cluster() -> dict:
    return load(CLUSTER)


@pytest.fixture(scope="module")
def gpu_types(cluster) -> dict:
    return {name: t for name, t in cluster["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


# -- cluster.yaml ----------------------------------------------------------------------------


def test_cluster_matches_rays_schema(cluster):
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))


def test_cluster_passes_the_checks_ray_up_runs_before_contacting_aws(cluster):
    # `ray up` = prepare_config (defaults, merged setup commands, docker, per-type workers)
    # then validate_config (schema again, head type, sum of min_workers), then the provider.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    # The common setup commands reach the head and the workers.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert prepared[key][: len(cluster["setup_commands"])] == cluster["setup_commands"]


def test_head_is_a_cpu_node_with_no_workers(cluster):
    head_type = cluster["head_node_type"]
    assert head_type in cluster["available_node_types"]
    head = cluster["available_node_types"][head_type]
    assert head["resources"].get("GPU", 0) == 0
    assert head.get("min_workers", 0) == 0 and head.get("max_workers", 0) == 0
    instance = head["node_config"]["InstanceType"]
    assert not instance.startswith(GPU_FAMILIES), instance
    assert "InstanceMarketOptions" not in head["node_config"], "the head must not be a spot instance"


def test_two_gpu_worker_types_one_single_gpu_one_larger(cluster, gpu_types):
    assert len(gpu_types) == 2, sorted(gpu_types)
    counts = sorted(t["resources"]["GPU"] for t in gpu_types.values())
    assert counts[0] == 1 and counts[1] > 1, counts
    for name, t in gpu_types.items():
        instance = t["node_config"]["InstanceType"]
        assert instance.startswith(GPU_FAMILIES), f"{name}: {instance} is not a GPU instance type"
        if instance in AWS_GPUS:
            assert t["resources"]["GPU"] == AWS_GPUS[instance], f"{name}: {instance} has {AWS_GPUS[instance]} GPUs"
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cluster["max_workers"], name
    assert sum(t.get("min_workers", 0) for t in cluster["available_node_types"].values()) <= cluster["max_workers"]


def test_a_gpu_worker_type_runs_on_spot(gpu_types):
    spot = [name for name, t in gpu_types.items()
            if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot, "no GPU worker type has InstanceMarketOptions: {MarketType: spot}"


@pytest.mark.parametrize("key,other", [("gpu_1x", "g5.xlarge"), ("gpu_8x", "p5.48xlarge")])
def test_instance_types_are_configured_in_one_place(cluster, key, other):
    """Changing `metadata.segray.<key>.instance_type` (a YAML anchor) changes the node type."""
    settings = cluster["metadata"]["segray"][key]
    text = CLUSTER.read_text()
    anchor = f"&{key}_instance_type {settings['instance_type']}"
    assert text.count(anchor) == 1, f"cluster.yaml should define {anchor!r} once"
    edited = yaml.safe_load(text.replace(anchor, f"&{key}_instance_type {other}"))
    changed = [name for name, t in edited["available_node_types"].items() if t["node_config"]["InstanceType"] == other]
    assert len(changed) == 1, changed
    node = cluster["available_node_types"][changed[0]]
    assert node["resources"]["GPU"] == settings["gpus"]
    assert (node["min_workers"], node["max_workers"]) == (settings["min_workers"], settings["max_workers"])


def test_docker_image_is_ray_260_py311_gpu_not_ray_ml(cluster):
    docker = cluster["docker"]
    images = [docker.get(k) for k in ("image", "head_image", "worker_image") if docker.get(k)]
    images += [t["docker"]["worker_image"] for t in cluster["available_node_types"].values()
               if t.get("docker", {}).get("worker_image")]
    assert images
    for image in images:
        match = IMAGE.match(image)
        assert match, image
        assert "ray-ml" not in image
        # The cluster runs the Ray that the lock and this environment have.
        assert match["version"] == locked_ray_version() == ray.__version__


def test_file_mounts_point_at_files_in_the_repository(cluster):
    mounts = cluster["file_mounts"]
    assert mounts.get("~/segray") == "."
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"  # Ray's token, from the user's machine
    for remote, local in mounts.items():
        if not local.startswith("~/"):
            assert (ROOT / local).exists(), f"file_mounts {remote}: {local} is missing"
    for pattern in cluster.get("rsync_filter", []):
        assert (ROOT / pattern).is_file(), pattern


def test_setup_commands_refer_to_files_that_exist(cluster):
    commands = cluster["setup_commands"]
    text = "\n".join(commands)
    # Paths on the nodes under the mount, mapped back to this checkout.
    remote = re.findall(r"~/segray(/[^\s;&|\"']*)?", text)
    assert remote
    for rest in remote:
        assert (ROOT / rest.lstrip("/")).exists(), f"~/segray{rest} does not exist in the repository"
    # Files the commands test for, relative to `cd ~/segray`.
    tested = re.findall(r"test -f (\S+)", text)
    assert set(tested) >= {"pyproject.toml", "uv.lock"}
    for name in tested:
        assert (ROOT / name).is_file(), name
    export = next(c for c in commands if "uv export" in c)
    assert "cd ~/segray" in export and "--locked" in export and "--no-dev" in export
    requirements = re.search(r"--output-file (\S+)", export)[1]
    assert any(f"-r {requirements}" in c and "--system" in c for c in commands)
    assert re.search(r'uv==\d+\.\d+\.\d+', text), "pin the uv that reads uv.lock"


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_the_setup_export_command_reproduces_the_lock(cluster, tmp_path):
    """Run the setup's `uv export` here (offline): the lock is current, and the pins it gives
    are the lock's versions, ray 2.60.0 included."""
    export = next(c for c in cluster["setup_commands"] if "uv export" in c).split("&&")[-1]
    argv = shlex.split(export)
    argv[argv.index("--output-file") + 1] = str(tmp_path / "requirements.txt")
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "UV_OFFLINE": "1", "UV_NO_PROGRESS": "1"})
    assert result.returncode == 0, result.stderr
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", (tmp_path / "requirements.txt").read_text(), re.MULTILINE))
    lock = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"] if "version" in p}
    assert pins["ray"] == "2.60.0"
    assert "pytest" not in pins and "moto" not in pins
    assert "segray" not in pins
    for name, version in pins.items():
        assert lock.get(name.lower().replace("_", "-")) == version, name


# -- KubeRay ---------------------------------------------------------------------------------

CRON_FIELD = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def valid_cron(expression: str) -> bool:
    """A standard 5-field cron expression: *, N, A-B, lists, /STEP (numbers only)."""
    fields = expression.split()
    if len(fields) != 5:
        return False
    for field, (low, high) in zip(fields, CRON_FIELD):
        for part in field.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            if not match:
                return False
            _, start, end, step = match.groups()
            numbers = [int(n) for n in (start, end) if n is not None]
            if any(not low <= n <= high for n in numbers) or (end and int(end) < int(start)):
                return False
            if step is not None and int(step) == 0:
                return False
    return True


@pytest.mark.parametrize("expression,ok", [
    ("0 3 * * *", True), ("*/15 * * * 1-5", True), ("0 0 1,15 * 0", True),
    ("0 3 * *", False), ("60 3 * * *", False), ("0 24 * * *", False), ("0 3 * * * *", False),
    ("@daily", False), ("*/0 * * * *", False), ("5-1 * * * *", False),
])
def test_cron_validator(expression, ok):
    assert valid_cron(expression) is ok


def rayjob_spec(path: Path) -> dict:
    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    if manifest["kind"] == "RayCronJob":
        spec = manifest["spec"]
        assert set(spec) <= {"schedule", "jobTemplate", "suspend", "timeZone"}, sorted(spec)
        assert valid_cron(spec["schedule"]), spec["schedule"]
        assert "spec" not in spec["jobTemplate"], "jobTemplate is a RayJob spec itself, with no spec: wrapper"
        return spec["jobTemplate"]
    assert manifest["kind"] == "RayJob"
    return manifest["spec"]


MANIFESTS = pytest.mark.parametrize("path", [RAYJOB, RAYCRONJOB], ids=["rayjob", "raycronjob"])


@MANIFESTS
def test_manifest_is_a_rayjob_that_shuts_down(path):
    spec = rayjob_spec(path)
    assert {"entrypoint", "rayClusterSpec"} <= set(spec)
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert re.match(r"^(https://|s3://|gs://).+\.zip$", runtime_env["working_dir"]), runtime_env["working_dir"]


def expanded_entrypoint(entrypoint: str) -> list[str]:
    """The entrypoint's argv after the shell that runs it (KubeRay's submitter, Ray's job
    supervisor) has expanded it."""
    result = subprocess.run(["sh", "-c", "printf '%s\\0' " + entrypoint], capture_output=True, text=True,
                            timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\0")[:-1]


@pytest.mark.parametrize("path, script", [(RAYJOB, "jobs/benchmark.py"), (RAYCRONJOB, "jobs/reevaluate.py")],
                         ids=["rayjob", "raycronjob"])
def test_entrypoint_runs_its_job_with_valid_options(path, script):
    entrypoint = rayjob_spec(path)["entrypoint"]
    # Kubernetes would replace $(NAME) with an environment variable's value in a container
    # command; the only $( ) here must be shell command substitutions.
    assert not re.search(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", entrypoint)
    argv = expanded_entrypoint(entrypoint)
    assert argv[:4] == ["uv", "run", "--locked", "--no-dev"], argv
    assert (ROOT / "pyproject.toml").is_file() and (ROOT / "uv.lock").is_file()
    at = argv.index("python") + 1
    assert argv[at] == script and (ROOT / script).is_file(), argv[at]
    args = vars(parser(JOBS[Path(script).stem], Config()).parse_args(argv[at + 1:]))
    assert re.fullmatch(r"[a-z0-9]+-\d{8}-\d{4}", args["output.run_id"]), args  # dated, one per run
    assert args["data.dataset"].startswith("s3://") and args["checkpoints.store"].startswith("s3://")
    if script == "jobs/benchmark.py":
        assert args["output.path"].startswith("s3://")
    else:  # reevaluate's own: the results table
        assert args["results.uri"].startswith("s3://")


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


@MANIFESTS
def test_cluster_spec_head_and_gpu_workers(path):
    cluster = rayjob_spec(path)["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__ == locked_ray_version()
    head = cluster["headGroupSpec"]
    groups = cluster["workerGroupSpecs"]
    for group in [head, *groups]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), "rayStartParams values are strings"
        for container in containers(group):
            match = IMAGE.match(container["image"])
            assert match and match["version"] == cluster["rayVersion"], container["image"]
    assert head["rayStartParams"].get("num-cpus") == "0"
    for container in containers(head):
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})
    assert {p["containerPort"] for p in containers(head)[0]["ports"]} >= {6379, 8265}
    gpu_groups = 0
    for group in groups:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", group["groupName"])
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in containers(group):
            resources = container["resources"]
            gpus = resources["limits"].get("nvidia.com/gpu")
            if gpus is not None:
                gpu_groups += 1
                assert int(gpus) >= 1
                # Kubernetes requires requests == limits for extended resources.
                assert resources.get("requests", {}).get("nvidia.com/gpu", gpus) == gpus
    assert gpu_groups >= 1


def test_scheduled_run_uses_the_one_off_runs_cluster_data_and_checkpoint_store():
    """The RayCronJob's jobTemplate is k8s/rayjob.yaml's spec but for the entrypoint, which
    re-evaluates the same dataset with the checkpoint store the one-off run records into."""
    once, scheduled = rayjob_spec(RAYJOB), rayjob_spec(RAYCRONJOB)
    assert set(once) == set(scheduled)
    for key in once:
        if key != "entrypoint":
            assert once[key] == scheduled[key], key
    options = [dict(re.findall(r"(--dataset|--checkpoints.store) (\S+)", s["entrypoint"])) for s in (once, scheduled)]
    assert options[0] == options[1] and len(options[0]) == 2


def test_every_cluster_asks_for_rays_token_and_the_api_for_its_own(cluster):
    """Whoever reaches the dashboard (8265) could run jobs as the nodes' S3 role, and whoever
    reaches port 8000 could call the API: Ray's token authentication is on everywhere, and
    the served API asks for a bearer token."""
    for command in cluster["head_start_ray_commands"][1:] + cluster["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token ray start" in command
    specs = [rayjob_spec(RAYJOB)["rayClusterSpec"], rayjob_spec(RAYCRONJOB)["rayClusterSpec"],
             load(ROOT / "k8s" / "rayservice.yaml")["spec"]["rayClusterConfig"]]
    assert all(spec["authOptions"] == {"mode": "token"} for spec in specs)
    service = yaml.safe_load(load(ROOT / "k8s" / "rayservice.yaml")["spec"]["serveConfigV2"])
    served = yaml.safe_load((ROOT / "jobs" / "serve_config.yaml").read_text())
    for config in (service, served):
        assert config["applications"][0]["args"]["serve"]["api_token_file"] == "/etc/segray/api-token"
