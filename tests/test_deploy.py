"""deploy/: what can be checked without a Docker engine or a cluster.

Every file parses; the files they name exist; the environment variables they list are the ones the
code reads (and the other way round); stop timeouts cover the shutdown grace; the image pins its
base and torch and runs as a non-root user with an exec-form entrypoint; the Job asks for one GPU;
the example config loads with the real config loader, so none of it drifts from the code.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import jobrl_async
from jobrl_async.config import SECRET_ENV, SEED_CHECKPOINTS, SEED_DATASET, load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PACKAGE = Path(jobrl_async.__file__).parent
METRICS_PORT = 9177
# The pipeline waits up to max(shutdown_grace_s, 60 s) for pending checkpoint uploads after the
# grace (jobrl_async/pipeline/shutdown.py, writer.close): a stop timeout must cover both.
UPLOAD_DRAIN_S = 60.0

# Listed in .env.example but read by libraries rather than by our code.
LIBRARY_ENV = {
    "AWS_ACCESS_KEY_ID": "botocore's credential chain",
    "AWS_ENDPOINT_URL_S3": "botocore: MinIO, moto, self-hosted S3 (see storage/s3.py)",
    "HF_TOKEN": "huggingface_hub: Gemma is a gated model",
}
# Secrets: listed with an empty value, never a filled-in example.
SECRETS = set(SECRET_ENV) | {"AWS_ACCESS_KEY_ID", "HF_TOKEN"}
# Set to "" these break things (the openai SDK takes an empty OPENAI_BASE_URL as the base URL):
# .env.example must list them commented out.
HARMFUL_WHEN_EMPTY = {"OPENAI_BASE_URL"}


# ---------------------------------------------------------------- helpers


def code_env_reads() -> set[str]:
    """Environment variables the package reads by name (JOBRL_* config overrides aside)."""
    pattern = re.compile(
        r"""(?:environ|env)\s*(?:\.get\(|\.setdefault\(|\.pop\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']"""
        r"""|getenv\(\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    names = set(SECRET_ENV)
    for path in PACKAGE.rglob("*.py"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            names.add(match.group(1) or match.group(2))
    return names


ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(active, commented-out) NAME -> value from deploy/.env.example."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        m = ENV_LINE.match(line.strip())
        if m:
            (commented if m.group(1) else active)[m.group(2)] = m.group(3)
    return active, commented


def required_stop_s() -> float:
    grace = max(load_config(env={}).pipeline.shutdown_grace_s, example_config().pipeline.shutdown_grace_s)
    return grace + max(grace, UPLOAD_DRAIN_S)


def example_config():
    return load_config(DEPLOY / "config.example.toml", env={})


def seconds(text: str | int) -> float:
    """`120`, `120s`, `2m`, `1m30s`, `1h` (compose and systemd durations) in seconds."""
    if isinstance(text, int) or str(text).isdigit():
        return float(text)
    units = {"h": 3600, "min": 60, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text).replace(" ", ""), f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))


def k8s_job() -> dict:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "job.yaml").read_text(encoding="utf-8")) if d]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    return job


def k8s_secret() -> dict:
    return yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text(encoding="utf-8"))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def docker_args() -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in dockerfile() if word == "ARG" and "=" in rest)


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            env.update(tok.split("=", 1) for tok in shlex.split(rest))
    return env


def systemd_unit() -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in (DEPLOY / "systemd" / "jobrl-async.service").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, _, value = line.partition("=")
            sections[current].append((key, value))
    return sections


def unit_value(section: str, key: str) -> str:
    values = [v for k, v in systemd_unit()[section] if k == key]
    assert values, f"{key}= missing from [{section}]"
    return values[-1]


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return str(args[args.index(flag) + 1])


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


# ---------------------------------------------------------------- .env.example


def test_env_example_lists_exactly_the_variables_the_code_reads() -> None:
    active, commented = env_example()
    listed = {n for n in {**active, **commented} if not n.startswith("JOBRL_")}
    reads = code_env_reads()
    assert reads - listed == set(), "read by the code but missing from deploy/.env.example"
    assert listed - reads - set(LIBRARY_ENV) == set(), "in deploy/.env.example but read by nothing"


def test_env_example_keeps_secrets_empty() -> None:
    active, commented = env_example()
    for name in SECRETS:
        assert name in active or name in commented, f"{name} not listed"
        assert active.get(name, "") == "" and commented.get(name, "") == "", f"{name} has a value"
    for name in HARMFUL_WHEN_EMPTY:
        assert name not in active, f"{name}= set empty would break its library: list it commented out"


def test_env_example_job_variables_are_real_config_keys() -> None:
    active, commented = env_example()
    jobrl = {n: v for n, v in {**commented, **active}.items() if n.startswith("JOBRL_")}
    assert jobrl, "show at least one JOBRL_SECTION__KEY example"
    cfg = load_config(env=jobrl)  # unknown keys and wrong types raise ConfigError
    for name in jobrl:
        section, _, key = name.removeprefix("JOBRL_").lower().partition("__")
        assert cfg.sources[f"{section}.{key}"] == "env"


def test_env_example_is_plain_enough_for_compose_systemd_and_kubectl() -> None:
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert ENV_LINE.match(line), f"not a plain KEY=value line: {line!r}"
        assert not line.startswith("export ") and " #" not in line and '"' not in line and "'" not in line


def test_filled_env_file_is_git_ignored() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "deploy/.env holds secrets: it must be git-ignored"
    kept = subprocess.run(["git", "check-ignore", "-q", "deploy/.env.example"], cwd=ROOT, check=False)
    assert kept.returncode == 1


# ---------------------------------------------------------------- config.example.toml


def test_example_config_loads_and_names_the_seed_storage() -> None:
    cfg = example_config()
    assert cfg.data.dataset == SEED_DATASET
    assert cfg.checkpoints.uri == SEED_CHECKPOINTS
    assert cfg.judge.mode == "llm"
    assert cfg.metrics.port == 0  # each deploy file turns the endpoint on with its own flags


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_pins_its_base_image() -> None:
    bases = [rest.split()[0] for word, rest in dockerfile() if word == "FROM"]
    assert bases
    for image in bases:
        assert "$" not in image, "resolve ARGs in FROM: the pin should be readable in the file"
        assert pinned(image), f"base image {image!r} has no fixed tag"
        assert image.startswith("nvidia/cuda:12.")


def test_dockerfile_pins_torch_like_the_venv_set_up() -> None:
    version = docker_args()["TORCH_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    installs = [rest for word, rest in dockerfile() if word == "RUN" and "pip install" in rest]
    assert any('"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in r for r in installs)
    assert "/cu12" in docker_args()["TORCH_INDEX_URL"]
    locked = re.search(r"^torch==([0-9.]+)\+cpu ", (ROOT / "requirements.lock").read_text(), re.M)
    assert locked and locked.group(1) == version, "the image and bin/ (the lock) should install the same torch"


def test_dockerfile_runs_as_a_non_root_user_with_an_exec_form_entrypoint() -> None:
    steps = dockerfile()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (entrypoint,) = [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["jobrl-async", "run"]  # exec form: SIGTERM reaches the process
    assert ("STOPSIGNAL", "SIGTERM") in steps
    assert ("EXPOSE", str(METRICS_PORT)) in steps


def test_dockerfile_keeps_model_and_cache_dirs_in_volumes() -> None:
    env = docker_env()
    (volumes,) = [json.loads(rest) for word, rest in dockerfile() if word == "VOLUME"]
    assert env["HF_HOME"] in volumes and env["XDG_CACHE_HOME"] in volumes


def test_docker_build_context_sends_what_pip_install_needs() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignore  # everything else (.venv, .git, runs/) stays out of the context
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for name in kept:
        assert (ROOT / name).exists(), f"Dockerfile.dockerignore keeps {name}, which does not exist"
    assert {"pyproject.toml", "jobrl_async"} <= kept
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.M)
    assert readme is None or readme.group(1) in kept


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_services_and_volumes() -> None:
    doc = compose()
    services = doc["services"]
    assert {"minio", "bootstrap", "trainer"} <= set(services)
    declared = set(doc.get("volumes") or {})
    for name, service in services.items():
        image = service.get("image", "")
        if "build" not in service:
            assert pinned(image), f"{name}: image {image!r} has no fixed tag"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source!r}, not declared"
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            # .env is the user's filled-in copy (git-ignored): its template must exist.
            template = DEPLOY / (env_file + ".example" if env_file == ".env" else env_file)
            assert template.exists(), f"{name}: env_file {env_file} has no template {template}"
    trainer = services["trainer"]
    assert (DEPLOY / trainer["build"]["context"] / trainer["build"]["dockerfile"]).exists()


def test_compose_interpolated_variables_are_listed_in_env_example() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    active, commented = env_example()
    assert used and used <= set(active) | set(commented)


def test_compose_bootstrap_uploads_the_bundled_dataset_where_the_config_reads_it() -> None:
    bootstrap = compose()["services"]["bootstrap"]
    mount = next(v for v in bootstrap["volumes"] if "job_offer_dataset.json" in v)
    source, target = mount.split(":")[:2]
    assert (DEPLOY / source).resolve() == PACKAGE / "assets" / "job_offer_dataset.json"
    script = "\n".join(bootstrap["command"])
    bucket_and_key = SEED_DATASET.removeprefix("s3://")
    assert f"mc cp {target} local/{bucket_and_key}" in script
    assert f"mc mb --ignore-existing local/{bucket_and_key.split('/')[0]}" in script
    assert example_config().data.dataset == SEED_DATASET


def test_compose_trainer_gpu_signals_metrics_and_config() -> None:
    trainer = compose()["services"]["trainer"]
    (gpu,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and "gpu" in gpu["capabilities"]
    assert trainer["stop_signal"] == "SIGTERM"
    assert seconds(trainer["stop_grace_period"]) >= required_stop_s()
    args = [str(a) for a in trainer["command"]]
    assert "--resume" in args
    port = int(flag_value(args, "--metrics-port"))
    assert port == METRICS_PORT
    assert flag_value(args, "--metrics-host") == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in trainer["ports"]  # published on the host's loopback only
    assert f"127.0.0.1:{port}/healthz" in " ".join(trainer["healthcheck"]["test"])
    config_mount = next(v for v in trainer["volumes"] if v.endswith(":ro") and ".toml" in v)
    source, target = config_mount.split(":")[:2]
    assert source == "./config.example.toml" and flag_value(args, "--config") == target
    assert trainer["environment"]["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    env = docker_env()
    assert {f"hf-cache:{env['HF_HOME']}", f"jobrl-cache:{env['XDG_CACHE_HOME']}"} <= set(trainer["volumes"])


def test_compose_publishes_minio_on_loopback_only() -> None:
    for port in compose()["services"]["minio"]["ports"]:
        assert port.startswith("127.0.0.1:")


# ---------------------------------------------------------------- Kubernetes


def test_k8s_job_requests_one_gpu_and_outlasts_the_shutdown_grace() -> None:
    job = k8s_job()
    assert job["apiVersion"] == "batch/v1"
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= required_stop_s()
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1  # requests must equal limits for GPUs
    assert pinned(container["image"])


def test_k8s_job_probes_health_on_the_metrics_port() -> None:
    pod = k8s_job()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = [str(a) for a in container["args"]]
    port = int(flag_value(args, "--metrics-port"))
    assert flag_value(args, "--metrics-host") == "0.0.0.0"
    assert "--resume" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == port == METRICS_PORT
    annotations = k8s_job()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_k8s_job_mounts_config_caches_and_the_secret() -> None:
    job = k8s_job()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = [str(a) for a in container["args"]]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_path = Path(flag_value(args, "--config"))
    assert "configMap" in volumes[mounts[str(config_path.parent)]]
    env = docker_env()
    assert env["HF_HOME"] in mounts and env["XDG_CACHE_HOME"] in mounts
    (source,) = container["envFrom"]
    assert source["secretRef"]["name"] == k8s_secret()["metadata"]["name"]
    uid = re.search(r"useradd --uid (\d+)", (DEPLOY / "Dockerfile").read_text()).group(1)
    assert pod["securityContext"]["runAsUser"] == int(uid)
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == container["name"]
    assert set(rule["onExitCodes"]["values"]) == {1, 2}  # bad input/config, usage: retrying will not help


def test_k8s_secret_holds_known_variables_with_empty_values() -> None:
    secret = k8s_secret()
    assert secret["kind"] == "Secret"
    data = secret["stringData"]
    known = code_env_reads() | set(LIBRARY_ENV)
    assert set(data) <= known
    assert set(data) >= {"AZURE_OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY"}
    assert all(value == "" for value in data.values())


# ---------------------------------------------------------------- systemd


def test_systemd_unit_stops_cleanly_and_resumes_after_a_restart() -> None:
    assert unit_value("Service", "KillSignal") == "SIGTERM"
    assert seconds(unit_value("Service", "TimeoutStopSec")) >= required_stop_s()
    assert unit_value("Service", "Restart") == "on-failure"
    assert unit_value("Service", "EnvironmentFile").startswith("/")
    assert "143" in unit_value("Service", "SuccessExitStatus").split()
    assert "1" in unit_value("Service", "RestartPreventExitStatus").split()
    args = shlex.split(unit_value("Service", "ExecStart"))
    assert args[0].endswith("/jobrl-async") and args[1] == "run"
    assert "--resume" in args and "--config" in args
    assert int(flag_value(args, "--metrics-port")) == METRICS_PORT
    user = unit_value("Service", "User")
    assert user and user != "root"


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "systemd" / "jobrl-async.service").read_text(encoding="utf-8")
    exec_path = shlex.split(unit_value("Service", "ExecStart"))[0]
    unit = tmp_path / "jobrl-async.service"
    unit.write_text(text.replace(exec_path, "/bin/true"))  # the install path does not exist here
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_seconds_parses_compose_and_systemd_durations() -> None:
    assert seconds("120s") == seconds("2m") == seconds("2min") == seconds(120) == 120
    assert seconds("1m30s") == 90
    with pytest.raises(AssertionError):
        seconds("soon")


def test_compose_vllm_profile_serves_what_the_trainer_needs() -> None:
    services = compose()["services"]
    vllm = services["vllm"]
    assert vllm["profiles"] == ["vllm"]  # off unless asked for
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    cmd = vllm["command"]
    assert "--enable-lora" in cmd
    assert int(cmd[cmd.index("--max-lora-rank") + 1]) >= load_config(env={}).lora.r
    assert cmd[cmd.index("--logprobs-mode") + 1] == "processed_logprobs"  # log-probs after temperature
    # the trainer writes adapters where the server reads them
    assert any(v.startswith("adapters:/adapters") for v in services["trainer"]["volumes"])
    assert "adapters:/adapters:ro" in vllm["volumes"]
