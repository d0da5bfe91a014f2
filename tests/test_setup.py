"""The set-up of bin/: the lock file in step with pyproject.toml, and bin/_venv.sh's pieces.

The whole set-up (uv or pip into a fresh .venv) needs the network and a minute: it is measured on
a fresh clone (README), not run here. These tests check what decides what gets installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", re.M)


def locked() -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(LOCK.read_text())}


def test_the_lock_satisfies_every_requirement_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in ("dev", "azure") for r in project["optional-dependencies"][extra])]
    pins = locked()
    for line in wanted:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock: run scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside {req.specifier}: run scripts/lock.sh")


def test_the_lock_holds_the_cpu_build_of_torch_and_no_cuda_package() -> None:
    pins = locked()
    assert pins["torch"].local == "cpu"
    assert not [name for name in pins if name.startswith("nvidia-") or name == "triton"]
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):  # every requirement is hashed
        assert "--hash=sha256:" in block, block.splitlines()[0]


def venv_shell(script: str, **env: str) -> str:
    r = subprocess.run(["bash", "-c", f'source "{ROOT}/bin/_venv.sh"; {script}'], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "JOBRL_VENV_FUNCTIONS_ONLY": "1", **env})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_lock_splits_into_torch_and_the_rest() -> None:
    torch = venv_shell("_jobrl_lock_part torch")
    rest = venv_shell("_jobrl_lock_part rest")
    assert PIN.findall(torch) == [("torch", str(locked()["torch"]))] and "--hash=sha256:" in torch
    rest_pins = {canonicalize_name(n) for n, _ in PIN.findall(rest)}
    assert rest_pins == set(locked()) - {"torch"}
    assert rest.count("--hash=") + torch.count("--hash=") == LOCK.read_text().count("--hash=")


def test_the_machines_pip_configuration_is_handed_to_uv(tmp_path: Path) -> None:
    # A stand-in python whose `pip config list` prints what this machine's does (both sources).
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\n"
                    ":env:.find-links='/opt/wheels'\n"
                    "global.find-links='/opt/wheels'\n"
                    "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'\n"
                    "global.constraint='/etc/xdg/pip/constraints.txt'\n"
                    "global.index-url='https://mirror.example/simple'\n"
                    "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
                    "EOF\n")
    fake.chmod(0o755)
    flags = venv_shell("_jobrl_uv_flags", JOBRL_PYTHON=str(fake)).splitlines()
    pairs = sorted(zip(flags[::2], flags[1::2]))
    assert pairs == [
        ("--constraint", "/etc/xdg/pip/constraints.txt"),
        ("--extra-index-url", "file:///opt/pypi-more/simple"),
        ("--extra-index-url", "file:///opt/pypi/simple"),
        ("--find-links", "/opt/wheels"),
        ("--find-links", "/opt/wheels"),
        ("--index-url", "https://mirror.example/simple"),
    ]
    assert venv_shell("_jobrl_pip_cert", JOBRL_PYTHON=str(fake)).strip() == "/etc/ssl/certs/ca-certificates.crt"


def test_pip_is_used_when_asked_or_when_uv_cannot_be_had(tmp_path: Path) -> None:
    assert venv_shell("_jobrl_find_uv", JOBRL_INSTALLER="pip").strip() == ""
    assert venv_shell("_jobrl_find_uv", JOBRL_UV="/opt/uv/bin/uv").strip() == "/opt/uv/bin/uv"
    # No uv on PATH and its bootstrap failing (a python whose pip fails): nothing, so pip runs.
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    path = ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "uv").exists())
    out = venv_shell("_jobrl_find_uv", JOBRL_PYTHON=str(failing), PATH=path, HOME=str(tmp_path),
                     XDG_CACHE_HOME=str(tmp_path / ".cache"))
    assert out.strip() == "" and not (tmp_path / ".cache" / "jobrl-async" / "uv-0.13.10").exists()


def test_a_gpu_torch_index_replaces_the_configured_index_for_uv(tmp_path: Path) -> None:
    fake_uv = tmp_path / "uv"
    fake_uv.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake_uv.chmod(0o755)
    flags = "UV_FLAGS=(--index-url https://mirror.example/simple --find-links /opt/wheels)"
    gpu = venv_shell(f'{flags}; _jobrl_install {fake_uv} torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128 2>&1')
    assert "https://mirror.example/simple" not in gpu and "/opt/wheels" in gpu
    assert gpu.splitlines()[-2:] == ["--index-url", "https://download.pytorch.org/whl/cu128"]
    plain = venv_shell(f"{flags}; _jobrl_install {fake_uv} --no-deps -r lock.txt 2>&1")
    assert "https://mirror.example/simple" in plain and "unsafe-best-match" in plain
