# Sourced by scripts/*: make .venv (Python >= 3.11) and install syncd into it.
# Usage: . scripts/_venv.sh [EXTRA]   (EXTRA e.g. "test" installs syncd[test])
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
      "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "syncd needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    echo "creating a venv failed; installing python3-venv with apt" >&2
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
extra="${1:-}"
spec="$ROOT"
[ -n "$extra" ] && spec="$ROOT[$extra]"
stamp="$VENV/.syncd-installed-$extra"
# Reinstall when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
