#!/usr/bin/env bash
# Build the Binder environment (binder/requirements.txt) in a clean virtual environment, the way
# repo2docker does (`pip install -r binder/requirements.txt` from the repository root), and check
# that it got the CPU-only torch (no CUDA, no nvidia-* wheels) and that ctseg imports and runs.
# Needs network access to PyPI and download.pytorch.org; takes a few minutes (torch CPU ~200 MB).
#
#   tools/check_binder_env.sh            # temporary venv, removed afterwards
#   KEEP=1 tools/check_binder_env.sh     # keep it (path printed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
VENV="$(mktemp -d /tmp/ctseg-binder-XXXXXX)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$VENV"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --no-cache-dir -r binder/requirements.txt
if "$VENV/bin/python" -m pip list 2>/dev/null | grep -i '^nvidia-'; then
    echo "FAIL: CUDA (nvidia-*) wheels were installed" >&2; exit 1
fi
"$VENV/bin/python" - <<'PY'
import torch
assert torch.version.cuda is None, f"CUDA build installed: {torch.__version__} (cuda {torch.version.cuda})"
assert "+cpu" in torch.__version__, torch.__version__
import ctseg_lib, monai, nibabel, pydicom  # noqa: F401,E401
from ctseg_lib.cli import main
assert main(["synth", "--task", "lung", "--out", "/tmp/ctseg-binder-check", "--cases", "1", "--scale", "0.2",
             "--overwrite"]) == 0
print("ok: torch", torch.__version__, "(CPU only), ctseg imports and runs")
PY
du -sh "$VENV" | sed 's/^/environment size: /'
