#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe, the "llvmpipe" adapter) so that the webgpu
# backend (Dawn, npm package `webgpu`) has an adapter on a machine without a GPU: for CI and
# for developers who want to run the webgpu tests. Debian 12's own Mesa (22.3) is refused by
# Dawn ("shaderUniform*ArrayDynamicIndexing required"), so on bookworm the driver comes from
# bookworm-backports (Mesa 25). Other Debian/Ubuntu releases use their own archive, provided
# its Mesa is new enough.
#
# Idempotent: a no-op (no apt call) when a new enough driver is already installed.
# Usage: scripts/setup-webgpu-cpu.sh [--check]   (--check: exit 0 if installed, 1 if not; no changes)
set -euo pipefail

MIN_MAJOR=23   # 22.3 is refused by Dawn and 25.0 works (measured); 23 and 24 are untested
ICD_DIR=/usr/share/vulkan/icd.d   # lavapipe's manifest: lvp_icd.json (Debian), lvp_icd.<arch>.json (others)

installed_major() {
  local v
  v=$(dpkg-query -W -f='${Status} ${Version}\n' mesa-vulkan-drivers 2>/dev/null | awk '$3=="installed"{print $4}')
  [ -n "$v" ] || return 1
  # e.g. 25.0.7-2~bpo12+1 -> 25 (an epoch such as 1:25.0 would be stripped too)
  v=${v#*:}
  echo "${v%%.*}"
}

have_driver() {
  local major
  major=$(installed_major) || return 1
  [ "$major" -ge "$MIN_MAJOR" ] && compgen -G "$ICD_DIR/lvp_icd*.json" >/dev/null && dpkg-query -W -f='${Status}\n' libvulkan1 2>/dev/null | grep -q ' installed$'
}

if have_driver; then
  echo "setup-webgpu-cpu: Mesa $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) software Vulkan already installed"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  echo "setup-webgpu-cpu: no Mesa >= $MIN_MAJOR software Vulkan driver installed" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null; then
  echo "setup-webgpu-cpu: apt-get not found; install Mesa >= $MIN_MAJOR's Vulkan drivers (lavapipe) by hand" >&2
  exit 1
fi
SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup-webgpu-cpu: needs root (or sudo) for apt-get" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
TARGET=()
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  # Add bookworm-backports once, unless some source already lists it.
  if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup-webgpu-cpu: adding bookworm-backports to apt's sources"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  TARGET=(-t bookworm-backports)
fi

$SUDO apt-get update -qq
# -t takes Mesa and the libraries it needs at new versions (LLVM, libdrm, ...) from backports;
# everything else stays on the release. libvulkan1 is the loader Dawn opens.
$SUDO apt-get install -y -qq --no-install-recommends "${TARGET[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null

if ! have_driver; then
  echo "setup-webgpu-cpu: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo '?'), but Dawn needs Mesa >= $MIN_MAJOR with lavapipe ($ICD_DIR/lvp_icd*.json)" >&2
  exit 1
fi
echo "setup-webgpu-cpu: installed Mesa $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) software Vulkan (lavapipe)"
