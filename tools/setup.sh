#!/usr/bin/env bash
# One-command set-up of pyconv_mm: creates .venv/ at the repo root with torch, mmcv (compiled ops),
# mmengine, mmpretrain, mmsegmentation, mmdet, mmaction2, this package (editable, with its PyConv
# CPU kernel compiled) and the test tools.
#
#   bash tools/setup.sh
#
# Environment variables (all optional):
#   PYCONV_PYTHON           interpreter used to create the venv            (default: python3.11)
#   PYCONV_TORCH            pip requirement(s) for torch and torchvision    (default: "torch==2.14.1 torchvision==0.29.1")
#   PYCONV_TORCH_INDEX_URL  extra index for another torch build, e.g. https://download.pytorch.org/whl/cu121
#   PYCONV_WHEEL_CACHE      where built mmcv wheels are kept               (default: ~/.cache/pyconv_mm/wheels)
#   FORCE_CUDA=1            build mmcv's CUDA ops even when no GPU is visible (needs a CUDA toolkit)
#   MAX_JOBS                parallel compile jobs for mmcv                  (default: number of cores)
#
# Re-running is safe: a working venv is reused, a cached mmcv wheel matching
# (python, torch, cpu/cuda) is installed instead of rebuilt, and an interrupted build leaves nothing behind.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_BIN="${PYCONV_PYTHON:-python3.11}"
TORCH_REQ="${PYCONV_TORCH:-torch==2.14.1 torchvision==0.29.1}"
CACHE="${PYCONV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyconv_mm/wheels}"
MMCV_VERSION="2.1.0"
START=$(date +%s)

step() { printf '\n[setup %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf '\n[setup] ERROR: %s\n' "$*" >&2; exit 1; }

step "1/6 virtual environment in $VENV"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  echo "reusing existing venv ($("$VENV/bin/python" --version))"
else
  command -v "$PY_BIN" >/dev/null || die "interpreter '$PY_BIN' not found; set PYCONV_PYTHON to a Python 3.10/3.11"
  rm -rf "$VENV"
  "$PY_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
CONSTRAINTS="$VENV/pyconv-constraints.txt"
# setuptools 77.0.3-80.8: pkg_resources (imported by mmcv's setup.py and, at run time, by mmengine 0.10.7)
# without a deprecation warning; torch 2.14 needs >= 77.0.3.
printf 'setuptools>=77.0.3,<80.9\n' > "$CONSTRAINTS"
pip_() {  # pip with our constraints; drops the noise of unreadable local index folders
  "$PY" -m pip --disable-pip-version-check "$@" -c "$CONSTRAINTS" 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

step "2/6 build tools (setuptools>=77.0.3,<80.9: mmcv's setup.py imports pkg_resources)"
pip_ install -q "pip>=23" "setuptools>=77.0.3,<80.9" wheel ninja

step "3/6 torch: $TORCH_REQ"
TORCH_ARGS=()
[ -n "${PYCONV_TORCH_INDEX_URL:-}" ] && TORCH_ARGS+=(--extra-index-url "$PYCONV_TORCH_INDEX_URL")
# shellcheck disable=SC2086
pip_ install -q ${TORCH_REQ} "${TORCH_ARGS[@]}"
read -r PYTAG TORCH_VER DEVICE < <("$PY" - <<'PY'
import os, sys, torch
cuda = torch.version.cuda and (torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1")
print(f"cp{sys.version_info.major}{sys.version_info.minor}", torch.__version__.replace("+", "_"),
      f"cu{torch.version.cuda.replace('.', '')}" if cuda else "cpu")
PY
)
echo "python $PYTAG, torch $TORCH_VER, mmcv ops for: $DEVICE"

step "4/6 mmcv $MMCV_VERSION with compiled ops"
KEY="mmcv-$MMCV_VERSION-$PYTAG-torch$TORCH_VER-$DEVICE"
WHEEL_DIR="$CACHE/$KEY"
if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null \
   && [ -f "$VENV/.mmcv-key" ] && [ "$(cat "$VENV/.mmcv-key")" = "$KEY" ]; then
  echo "mmcv $MMCV_VERSION ($KEY) already installed"
else
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    JOBS="${MAX_JOBS:-$(nproc)}"
    echo "no cached wheel for $KEY in $CACHE"
    echo "building mmcv $MMCV_VERSION from the PyPI sdist: expect 6 to 25 minutes on 2 cores (CPU ops; 6.5 to 13 measured here), less with more cores"
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/pyconv-mmcv-build.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
    pip_ download -q --no-deps --no-binary :all: --no-build-isolation -d "$BUILD" "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.5 headers need C++20 ("C++20 or later compatible compiler is required to use ATen");
    # mmcv 2.1.0's setup.py hard-codes -std=c++17.
    if "$PY" -c "import torch, sys; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 5))"; then
      sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
      echo "patched mmcv setup.py: -std=c++17 -> -std=c++20 (needed by torch $TORCH_VER)"
    fi
    ( cd "$SRC" && export MAX_JOBS="$JOBS" MMCV_WITH_OPS=1 && pip_ wheel --no-build-isolation --no-deps -w "$BUILD/dist" . ) \
      || die "mmcv build failed; see the compiler output above"
    mkdir -p "$CACHE"
    # publish atomically: an interrupted build never leaves a half-written wheel in the cache
    TMP_DIR="$(mktemp -d "$CACHE/.tmp-$KEY.XXXXXX")"
    mv "$BUILD"/dist/mmcv-*.whl "$TMP_DIR/"
    rm -rf "$WHEEL_DIR"
    mv "$TMP_DIR" "$WHEEL_DIR"
    echo "cached $(ls "$WHEEL_DIR")"
  else
    echo "using cached wheel $(ls "$WHEEL_DIR"/mmcv-*.whl)"
  fi
  pip_ install -q --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl
  pip_ install -q addict mmengine==0.10.7 numpy packaging Pillow pyyaml yapf opencv-python
  echo "$KEY" > "$VENV/.mmcv-key"
fi

step "5/6 OpenMMLab codebases, pyconv_mm (editable, with its C++ kernel) and test tools"
# --no-build-isolation: the PyConv kernel (pyconv_mm/ops/csrc) compiles against the torch above
pip_ install -q --no-build-isolation -e "$ROOT[all,tests]" \
  "mmcv==$MMCV_VERSION" --find-links "$WHEEL_DIR"

step "6/6 checking the installation"
"$PY" -m pyconv_mm.utils.check_env || die "some parts failed to import (listed above)"
step "done: activate with 'source .venv/bin/activate', run the tests with '.venv/bin/python -m pytest'"
