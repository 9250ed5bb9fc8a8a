#!/usr/bin/env bash
# Installs the Debian packages Memharbor needs when they are missing (root or sudo).
# Usage: scripts/system-deps.sh run|test|bench
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ffmpeg || need+=(ffmpeg)
have java || need+=(default-jre-headless)
have chromium || need+=(chromium)
have npm || need+=(npm)
if [ "${1:-run}" != run ]; then
  have espeak-ng || need+=(espeak-ng)
fi
if [ "${1:-run}" != run ]; then
  have nginx || need+=(nginx-light)  # tests/test_deployment.py, bench/slow_clients.py
fi
if [ "${1:-run}" = bench ]; then
  have wrk || need+=(wrk)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "[system-deps] installing: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

jar="${FIRESTORE_EMULATOR_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}"
if [ ! -f "$jar" ]; then
  echo "[system-deps] the Firestore emulator jar is missing ($jar): install the Debian package google-cloud-cli-firestore-emulator (Google Cloud's apt repository) or set FIRESTORE_EMULATOR_JAR" >&2
  exit 1
fi
