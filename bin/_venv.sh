# Sourced by bin/jobrl-async and bin/test: create or reuse the project's .venv.
#
# First use: create .venv and install exactly the versions of requirements.lock (every file's
# hash is checked), torch first, then the project itself in editable mode. uv does the work
# (seconds); when uv cannot be had, pip does the same from the same lock (minutes).
# Later uses: a stamp (hash of pyproject.toml, the lock and the torch choice) says nothing
# changed, so nothing is installed and start-up takes well under a second.
#
# torch: the lock holds the CPU build (torch==2.13.0+cpu), so a CPU machine never pulls CUDA
# packages. GPU boxes name another build and the index that serves it; the lock's torch line is
# then left out and everything else still comes from the lock (README, "Running on a GPU"):
#   JOBRL_TORCH="torch==2.13.0" JOBRL_TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#
# The machine's pip configuration (find-links, index URLs, constraints, certificate) is honoured
# by both installers: pip reads it itself, and it is handed to uv, which does not read it.
# JOBRL_INSTALLER=pip forces pip; JOBRL_UV=/path/to/uv uses that uv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JOBRL_VENV:-$ROOT/.venv}"
PYTHON="${JOBRL_PYTHON:-python3}"
LOCK="$ROOT/requirements.lock"
TORCH_SPEC="${JOBRL_TORCH:-}"
TORCH_INDEX="${JOBRL_TORCH_INDEX_URL:-}"
UV_VERSION="0.13.10"

_jobrl_say() { echo "jobrl-async: $*" >&2; }

_jobrl_stamp() {
  { cat "$ROOT/pyproject.toml" "$LOCK"; echo "$TORCH_SPEC $TORCH_INDEX"; } | sha256sum | cut -c1-16
}

# A uv binary on stdout, or nothing: $JOBRL_UV, uv on PATH, else uv from PyPI installed once
# into the user cache (about 10 s: pip, honouring the machine's configuration).
_jobrl_find_uv() {
  [[ "${JOBRL_INSTALLER:-}" == pip ]] && return 0
  if [[ -n "${JOBRL_UV:-}" ]]; then echo "$JOBRL_UV"; return 0; fi
  if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
  local boot="${XDG_CACHE_HOME:-$HOME/.cache}/jobrl-async/uv-$UV_VERSION"
  if [[ ! -x "$boot/bin/uv" ]]; then
    _jobrl_say "fetching uv $UV_VERSION from PyPI into $boot (one time, about 10 s)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$boot" "uv==$UV_VERSION" >&2 2>/dev/null || { rm -rf "$boot"; return 0; }
  fi
  echo "$boot/bin/uv"
}

# The machine's pip configuration as uv flags (one per line), from `pip config list`.
_jobrl_uv_flags() {
  local key value item
  while IFS='=' read -r key value; do
    value="${value#\'}"; value="${value%\'}"
    case "${key##*.}" in
      find-links) for item in $value; do printf -- '--find-links\n%s\n' "$item"; done ;;
      index-url) printf -- '--index-url\n%s\n' "$value" ;;
      extra-index-url) for item in $value; do printf -- '--extra-index-url\n%s\n' "$item"; done ;;
      constraint) for item in $value; do printf -- '--constraint\n%s\n' "$item"; done ;;
    esac
  done < <("$PYTHON" -m pip config list 2>/dev/null | sort -u)
}

_jobrl_pip_cert() {
  "$PYTHON" -m pip config list 2>/dev/null | sed -n "s/^.*\.cert='\(.*\)'$/\1/p" | head -n 1
}

# One part of the lock: `torch` (its requirement and --hash lines) or `rest` (everything else).
_jobrl_lock_part() {
  awk -v want="$1" '/^[^[:space:]#]/ {torch = /^torch==/} /^[[:space:]#]/ && !/^[[:space:]]+--hash/ {next}
    (want == "torch") == torch {print}' "$LOCK"
}

_jobrl_install() {  # _jobrl_install INSTALLER ARGS...: uv pip install or pip install into $VENV
  local installer="$1"; shift
  if [[ "$installer" == pip ]]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
  else
    local flags=("${UV_FLAGS[@]}") i
    if [[ " $* " == *" --index-url "* ]]; then  # ours replaces the configured one, as on pip's command line
      flags=()
      for ((i = 0; i < ${#UV_FLAGS[@]}; i += 2)); do
        [[ "${UV_FLAGS[i]}" == --index-url ]] || flags+=("${UV_FLAGS[i]}" "${UV_FLAGS[i + 1]}")
      done
    fi
    # unsafe-best-match: every index counts, as with pip (the lock's hashes say which files are right)
    "$installer" pip install --quiet --python "$VENV/bin/python" --index-strategy unsafe-best-match \
      "${flags[@]}" "$@" >&2
  fi
}

_jobrl_ensure_venv() {
  local want have="" uv installer started lock_file
  want="$(_jobrl_stamp)"
  [[ -f "$VENV/.jobrl-stamp" ]] && have="$(cat "$VENV/.jobrl-stamp")"
  if [[ -x "$VENV/bin/python" && "$want" == "$have" ]]; then
    return 0
  fi
  started=$SECONDS
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { _jobrl_say "Python >= 3.11 is required ($PYTHON is older)"; exit 1; }
  uv="$(_jobrl_find_uv)"
  UV_FLAGS=()
  if [[ -n "$uv" ]]; then
    installer="$uv"
    mapfile -t UV_FLAGS < <(_jobrl_uv_flags)
    local cert; cert="$(_jobrl_pip_cert)"
    [[ -n "$cert" && -z "${SSL_CERT_FILE:-}" ]] && export SSL_CERT_FILE="$cert"
    export UV_PYTHON_DOWNLOADS=never
    _jobrl_say "setting up $VENV with uv from requirements.lock (one time, about 30 s)"
    [[ -x "$VENV/bin/python" ]] || "$uv" venv --quiet --python "$PYTHON" "$VENV" >&2
  else
    installer=pip
    [[ "${JOBRL_INSTALLER:-}" == pip ]] || _jobrl_say "uv could not be had: using pip instead"
    _jobrl_say "setting up $VENV with pip from requirements.lock (one time, 4-10 minutes)"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  fi
  lock_file="$(mktemp)"
  if [[ -n "$TORCH_SPEC$TORCH_INDEX" ]]; then
    _jobrl_say "installing ${TORCH_SPEC:-torch} from ${TORCH_INDEX:-the configured indexes} instead of the lock's CPU build (a CUDA build is 2-3 GB: minutes)"
    local index=(); [[ -n "$TORCH_INDEX" ]] && index=(--index-url "$TORCH_INDEX")
    _jobrl_install "$installer" "${TORCH_SPEC:-torch}" "${index[@]}"
  else
    _jobrl_lock_part torch > "$lock_file"
    _jobrl_say "installing $(grep -m1 -o '^torch==[^ ;]*' "$lock_file") (the CPU build, ~750 MB installed: uv takes seconds from a local wheel, longer to download ~200 MB; pip 1-3 minutes)"
    _jobrl_install "$installer" --no-deps -r "$lock_file"
  fi
  _jobrl_lock_part rest > "$lock_file"
  _jobrl_say "installing the other locked dependencies ($(grep -c '^[a-zA-Z0-9]' "$lock_file") packages)"
  _jobrl_install "$installer" --no-deps -r "$lock_file"
  _jobrl_say "installing jobrl-async itself (editable)"
  _jobrl_install "$installer" --no-deps -e "$ROOT"
  rm -f "$lock_file"
  echo "$want" > "$VENV/.jobrl-stamp"
  _jobrl_say "set-up done in $((SECONDS - started)) s"
}

[[ -n "${JOBRL_VENV_FUNCTIONS_ONLY:-}" ]] && return 0  # tests/test_setup.py: the functions alone
_jobrl_ensure_venv
export PATH="$VENV/bin:$PATH"
