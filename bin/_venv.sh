# Sourced by bin/jobrl-async and bin/test: create or reuse the project's .venv.
#
# First use: create .venv, install torch first (the CPU build by default, so a CPU machine
# never pulls CUDA packages), then the project in editable mode with its dev extras.
# Later uses: a stamp (hash of pyproject.toml + torch spec) says nothing changed, so
# nothing is installed and start-up takes well under a second.
#
# GPU boxes: JOBRL_TORCH="torch==2.13.0" JOBRL_TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# installs a CUDA build instead (see README, "Running on a GPU").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JOBRL_VENV:-$ROOT/.venv}"
PYTHON="${JOBRL_PYTHON:-python3}"
TORCH_SPEC="${JOBRL_TORCH:-torch==2.13.0}"
TORCH_INDEX="${JOBRL_TORCH_INDEX_URL:-}"

_jobrl_stamp() {
  { cat "$ROOT/pyproject.toml"; echo "$TORCH_SPEC $TORCH_INDEX"; } | sha256sum | cut -c1-16
}

_jobrl_ensure_venv() {
  local want have=""
  want="$(_jobrl_stamp)"
  [[ -f "$VENV/.jobrl-stamp" ]] && have="$(cat "$VENV/.jobrl-stamp")"
  if [[ -x "$VENV/bin/python" && "$want" == "$have" ]]; then
    return 0
  fi
  echo "jobrl-async: setting up $VENV (one time, about a minute)" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "jobrl-async: Python >= 3.11 is required ($PYTHON is older)" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  if [[ -n "$TORCH_INDEX" ]]; then
    "${pip[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX" >&2
  else
    "${pip[@]}" "$TORCH_SPEC" >&2
  fi
  "${pip[@]}" -e "$ROOT[dev]" >&2
  echo "$want" > "$VENV/.jobrl-stamp"
}

_jobrl_ensure_venv
export PATH="$VENV/bin:$PATH"
