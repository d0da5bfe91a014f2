#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml: every package pinned with the hashes of all
# its files on PyPI (any platform), the dev and azure extras included, torch pinned to its CPU
# build (scripts/lock-constraints.txt: what bin/ installs unless JOBRL_TORCH / JOBRL_TORCH_INDEX_URL name another).
#
# Run it after changing dependencies in pyproject.toml, then commit both files. torch's CPU
# build is not on PyPI: it is found through the machine's find-links (this machine: /opt/wheels),
# or pass its index: UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/lock.sh
# Needs uv (on PATH, $JOBRL_UV, or the one bin/ fetched into the user cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
uv="${JOBRL_UV:-$(command -v uv || echo "${XDG_CACHE_HOME:-$HOME/.cache}/jobrl-async/uv-0.13.10/bin/uv")}"
[[ -x "$uv" ]] || { echo "scripts/lock.sh: uv not found (run bin/jobrl-async --version once, or set JOBRL_UV)" >&2; exit 1; }
find_links=()
for item in $(python3 -m pip config list 2>/dev/null | sed -n "s/^.*\.find-links='\(.*\)'$/\1/p" | sort -u); do
  find_links+=(--find-links "$item")
done
cd "$ROOT"
# PyPI's own hashes (not a local mirror's): the lock must install anywhere.
"$uv" pip compile pyproject.toml --extra dev --extra azure --universal --python-version 3.11 \
  --generate-hashes --constraint scripts/lock-constraints.txt "${find_links[@]}" \
  --custom-compile-command "scripts/lock.sh" --output-file requirements.lock --quiet
echo "scripts/lock.sh: wrote requirements.lock ($(grep -c '^[a-zA-Z0-9]' requirements.lock) packages)" >&2
