#!/usr/bin/env bash
# Installs the Debian packages that Vigil's tests and demo use, only those
# missing. Run as root (CI is); otherwise it uses sudo when it can, and says
# which tests will be skipped when it cannot.
set -euo pipefail

pkgs=(iproute2 nftables resource-agents fence-agents busybox-static qemu-system-x86 qemu-utils)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "deps: missing ${missing[*]} and not root: the network-namespace tests will be skipped" >&2
    exit 0
  fi
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || echo "deps: apt-get update failed; trying with the cached lists" >&2
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
