#!/usr/bin/env bash
# Builds the tiny test/demo guest that Vigil's QEMU tests and demo boot under
# TCG (no /dev/kvm needed). Usage:
#
#   scripts/guest-image.sh OUTDIR
#
# OUTDIR then holds:
#   vmlinux            uncompressed PVH ELF kernel (boot it with -kernel);
#                      when the kernel has no PVH entry note, vmlinuz instead
#                      (the bzImage). Callers: prefer vmlinux, else vmlinuz.
#   initramfs.cpio.gz  busybox-static userland whose /init prints, on the
#                      serial console (ttyS0),
#                        vigil-guest boot <bootid>            once, then
#                        vigil-guest counter N boot=<bootid>  every second;
#                      powers off on an ACPI power button press (QMP
#                      system_powerdown); reads console input lines:
#                      "poweroff" powers off, "reboot" reboots, "panic"
#                      panics the kernel (which reboots: panic=-1),
#                      "busy MIB" starts (or resizes, or with 0 stops) the
#                      busy loop below.
#                      Busy mode, for live-migration benchmarks: with
#                      vigil.busy=MIB on the kernel command line (or after
#                      "busy MIB" on the console) a loop rewrites a MIB-sized
#                      file on the guest's RAM-backed /tmp over and over,
#                      without pause, with random (non-zero) data, so the
#                      guest keeps dirtying that much memory; it prints
#                        vigil-guest busy MIB MiB boot=<bootid>
#                      when it starts (MIB 0 when stopped), or
#                        vigil-guest busy error: ...
#                      A client of the console socket must keep reading it:
#                      unread output stalls the guest's console (see
#                      internal/qemu/guestimage).
#   cmdline            the kernel command line to pass with -append.
#   stamp              build version and provenance; written last.
#
# The kernel comes from Debian's linux-image-cloud-amd64 (its concrete
# linux-image-*-cloud-amd64 dependency), fetched with `apt-get download` and
# unpacked with dpkg-deb -x, never installed on the host. The only network
# access is apt. A second run with a complete OUTDIR returns at once.
#
# Offline use: VIGIL_GUEST_KERNEL_DEB=/path/to/linux-image-...deb skips apt.
# VIGIL_GUEST_BZIMAGE=1 ships vmlinuz even when vmlinux would do (to compare).
#
# Exit status: 0 built (or already complete; prints kernel=, initrd= and
# cmdline= lines on stdout), 3 an input could not be had (no network to the
# Debian mirror, not root for an apt-get install, not a Debian host), 1 any
# other failure.
set -euo pipefail

# Bump when the output changes (init script, modules, cmdline, extraction).
# A cached image is also keyed by this script's own content: the stamp's
# first line carries its SHA-256, so any edit of this file makes the next
# run rebuild OUTDIR (CI's and every developer's cache), bumped or not.
readonly VERSION=3
SCRIPT_SUM=$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-16) ||
  { echo "guest-image: error: cannot hash ${BASH_SOURCE[0]}" >&2; exit 1; }
readonly SCRIPT_SUM
readonly STAMP_HEAD="vigil-guest-image v$VERSION script=$SCRIPT_SUM"
# panic=-1: reboot at once on a panic (QEMU's -no-reboot turns that into an
# exit). no_timer_check: under TCG on a loaded host the IO-APIC timer check
# can fail and panic the boot. cryptomgr.notests: the crypto self-tests are
# ~20% of the boot's CPU time under TCG.
readonly CMDLINE="console=ttyS0 panic=-1 quiet no_timer_check cryptomgr.notests"
# Kernel modules the guest needs, relative to lib/modules/<kver>/kernel,
# in load order. button: ACPI power button; evdev: its /dev/input device;
# pvpanic*: lets QEMU see a guest panic when started with -device pvpanic.
readonly MODULES=(
  drivers/acpi/button
  drivers/input/evdev
  drivers/misc/pvpanic/pvpanic
  drivers/misc/pvpanic/pvpanic-mmio
  drivers/misc/pvpanic/pvpanic-pci
)
readonly REQUIRED_MODULES=(drivers/acpi/button drivers/input/evdev)

log() { echo "guest-image: $*" >&2; }
die() { echo "guest-image: error: $*" >&2; exit 1; }
unavailable() { echo "guest-image: unavailable: $*" >&2; exit 3; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$1
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

complete() {
  [ -f "$OUT/stamp" ] && [ "$(head -n1 "$OUT/stamp")" = "$STAMP_HEAD" ] &&
    [ -s "$OUT/initramfs.cpio.gz" ] && [ -s "$OUT/cmdline" ] &&
    { [ -s "$OUT/vmlinux" ] || [ -s "$OUT/vmlinuz" ]; }
}

report() {
  local k=vmlinux
  [ -s "$OUT/vmlinux" ] || k=vmlinuz
  echo "kernel=$OUT/$k"
  echo "initrd=$OUT/initramfs.cpio.gz"
  echo "cmdline=$(cat "$OUT/cmdline")"
}

if complete; then report; exit 0; fi

# One builder at a time per OUTDIR (parallel test packages share the cache).
command -v flock >/dev/null || die "flock (util-linux) is missing"
exec 9>"$OUT/.lock"
flock 9
if complete; then report; exit 0; fi

SUDO=""
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      SUDO="sudo -n"
    else
      unavailable "$1: not root and no passwordless sudo"
    fi
  fi
}

# apt_update refreshes the apt lists once, when it can; the step that
# needed it then fails with its own message if it still cannot go on.
apt_updated=0
apt_update() {
  [ "$apt_updated" -eq 0 ] || return 0
  apt_updated=1
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      log "cannot apt-get update (not root, no passwordless sudo); trying with the cached lists"
      return 0
    fi
  fi
  log "apt-get update"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null ||
    log "apt-get update failed; trying with the cached lists"
}

# ensure_tool CMD PACKAGE: installs the Debian PACKAGE when CMD is missing.
ensure_tool() {
  command -v "$1" >/dev/null && return 0
  need_root "installing $2 (for $1)"
  log "installing $2"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1 || {
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends "$2" >/dev/null ||
      unavailable "apt-get install $2 failed"
  }
  command -v "$1" >/dev/null || die "package $2 installed but $1 is still missing"
}

busybox_path() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    # busybox-static: a static binary, so it runs alone in the initramfs.
    if [ -x "$b" ] && ! LC_ALL=C ldd "$b" >/dev/null 2>&1; then echo "$b"; return 0; fi
  done
  return 1
}

BUSYBOX=$(busybox_path) || {
  need_root "installing busybox-static"
  log "installing busybox-static"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends busybox-static >/dev/null 2>&1 || {
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends busybox-static >/dev/null ||
      unavailable "apt-get install busybox-static failed"
  }
  BUSYBOX=$(busybox_path) || die "busybox-static installed but no static /bin/busybox found"
}
ensure_tool dpkg-deb dpkg
ensure_tool gzip gzip

# Under the lock, any build dir is left over from a killed run.
rm -rf "$OUT"/.build.*
TMP=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- kernel package -------------------------------------------------------
if [ -n "${VIGIL_GUEST_KERNEL_DEB:-}" ]; then
  [ -f "$VIGIL_GUEST_KERNEL_DEB" ] || die "VIGIL_GUEST_KERNEL_DEB=$VIGIL_GUEST_KERNEL_DEB: no such file"
  DEB=$VIGIL_GUEST_KERNEL_DEB
else
  command -v apt-cache >/dev/null || unavailable "apt-cache missing: not a Debian host? set VIGIL_GUEST_KERNEL_DEB"
  resolve() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1
  }
  PKG=$(resolve)
  if [ -z "$PKG" ]; then apt_update; PKG=$(resolve); fi
  [ -n "$PKG" ] || unavailable "cannot resolve linux-image-cloud-amd64 to a concrete kernel package (apt-cache depends linux-image-cloud-amd64 found none; apt lists missing?)"
  log "downloading $PKG"
  mkdir -p "$TMP/deb"
  dl_opts=()
  # As root apt drops to _apt, which cannot write into our private temp dir.
  [ "$(id -u)" -ne 0 ] || dl_opts=(-o APT::Sandbox::User=root)
  (cd "$TMP/deb" && apt-get download -q "${dl_opts[@]}" "$PKG" >/dev/null) || {
    apt_update
    (cd "$TMP/deb" && apt-get download -q "${dl_opts[@]}" "$PKG" >/dev/null) ||
      unavailable "apt-get download $PKG failed (no network to the Debian mirror?)"
  }
  DEB=$(ls "$TMP"/deb/*.deb 2>/dev/null | head -n1)
  [ -n "$DEB" ] || die "apt-get download $PKG produced no .deb"
fi
DEB_ID="$(dpkg-deb -f "$DEB" Package) $(dpkg-deb -f "$DEB" Version)" ||
  die "$DEB is not a readable .deb"
log "unpacking $DEB_ID"
dpkg-deb -x "$DEB" "$TMP/pkg" || die "dpkg-deb -x $DEB failed"
VMLINUZ=$(ls "$TMP"/pkg/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$VMLINUZ" ] || die "$DEB_ID has no boot/vmlinuz-*"
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=$TMP/pkg/lib/modules/$KVER/kernel
[ -d "$MODDIR" ] || MODDIR=$TMP/pkg/usr/lib/modules/$KVER/kernel
[ -d "$MODDIR" ] || die "$DEB_ID has no lib/modules/$KVER/kernel"

# --- vmlinux out of the bzImage ---------------------------------------------
# The x86 boot protocol (>= 2.08) gives the compressed payload exactly:
# setup_sects at 0x1f1, payload_offset at 0x248 and payload_length at 0x24c,
# offsets counted from the protected-mode code at (setup_sects+1)*512. The
# payload ends with the 4-byte little-endian uncompressed size.
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' \n'; }
u16() { od -An -tu2 -j "$2" -N2 "$1" | tr -d ' \n'; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' \n'; }
magic_at() { od -An -tx1 -j "$2" -N"$3" "$1" | tr -d ' \n'; }

# is_pvh FILE: an x86-64 ELF with XEN_ELFNOTE_PHYS32_ENTRY (note type 18,
# owner "Xen") in a PT_NOTE segment, which QEMU's -kernel needs for PVH.
is_pvh() {
  local f=$1 phoff phentsize phnum i ph type off size p end namesz descsz ntype name
  [ "$(magic_at "$f" 0 4)" = 7f454c46 ] || return 1          # \x7fELF
  [ "$(u8 "$f" 4)" = 2 ] || return 1                          # ELFCLASS64
  phoff=$(od -An -tu8 -j 32 -N8 "$f" | tr -d ' \n')
  phentsize=$(u16 "$f" 54)
  phnum=$(u16 "$f" 56)
  for ((i = 0; i < phnum; i++)); do
    ph=$((phoff + i * phentsize))
    type=$(u32 "$f" "$ph")
    [ "$type" = 4 ] || continue                               # PT_NOTE
    off=$(od -An -tu8 -j $((ph + 8)) -N8 "$f" | tr -d ' \n')
    size=$(od -An -tu8 -j $((ph + 32)) -N8 "$f" | tr -d ' \n')
    p=$off
    end=$((off + size))
    while ((p + 12 <= end)); do
      namesz=$(u32 "$f" "$p")
      descsz=$(u32 "$f" $((p + 4)))
      ntype=$(u32 "$f" $((p + 8)))
      name=$(magic_at "$f" $((p + 12)) 3)
      [ "$ntype" = 18 ] && [ "$name" = 58656e ] && return 0   # "Xen"
      p=$((p + 12 + (namesz + 3) / 4 * 4 + (descsz + 3) / 4 * 4))
    done
  done
  return 1
}

extract_vmlinux() {
  local z=$1 out=$2 ss pver poff plen off payload m want got
  [ "$(magic_at "$z" $((0x202)) 4)" = 48647253 ] || { log "$z: no bzImage header"; return 1; } # HdrS
  pver=$(u16 "$z" $((0x206)))
  ((pver >= 0x208)) || { log "$z: boot protocol $pver has no payload fields"; return 1; }
  ss=$(u8 "$z" $((0x1f1)))
  [ "$ss" != 0 ] || ss=4
  poff=$(u32 "$z" $((0x248)))
  plen=$(u32 "$z" $((0x24c)))
  off=$(((ss + 1) * 512 + poff))
  payload=$TMP/payload
  dd if="$z" of="$payload" iflag=skip_bytes,count_bytes skip="$off" count="$plen" status=none ||
    return 1
  want=$(u32 "$payload" $((plen - 4)))
  m=$(magic_at "$payload" 0 6)
  case $m in
    1f8b*) ensure_tool gzip gzip; gzip -dc <"$payload" >"$out" 2>/dev/null || true ;;
    fd377a585a00) ensure_tool xz xz-utils; xz -dc <"$payload" >"$out" 2>/dev/null || true ;;
    28b52ffd*) ensure_tool zstd zstd; zstd -dcq <"$payload" >"$out" 2>/dev/null || true ;;
    02214c18*) # LZ4 legacy frame; drop the trailing size or lz4 errors out
      ensure_tool lz4 lz4
      head -c -4 "$payload" | lz4 -dcq >"$out" 2>/dev/null || true ;;
    425a68*) ensure_tool bzip2 bzip2; bzip2 -dc <"$payload" >"$out" 2>/dev/null || true ;;
    5d0000*) ensure_tool xz xz-utils; xz -dc --format=lzma <"$payload" >"$out" 2>/dev/null || true ;;
    894c5a*) ensure_tool lzop lzop; lzop -dc <"$payload" >"$out" 2>/dev/null || true ;;
    *) log "$z: unknown compression magic $m"; return 1 ;;
  esac
  got=$(stat -c %s "$out")
  [ "$got" = "$want" ] || { log "$z: decompressed $got bytes, header says $want"; return 1; }
}

mkdir -p "$TMP/out"
KERNEL_NOTE=""
KERNEL_FILE=vmlinuz
if [ "${VIGIL_GUEST_BZIMAGE:-}" = 1 ]; then
  KERNEL_NOTE=" (VIGIL_GUEST_BZIMAGE=1)"
elif extract_vmlinux "$VMLINUZ" "$TMP/out/vmlinux" && is_pvh "$TMP/out/vmlinux"; then
  KERNEL_FILE=vmlinux
  log "extracted PVH vmlinux ($KVER)"
else
  KERNEL_NOTE=" (no PVH vmlinux could be extracted: using the bzImage, which boots slower)"
  log "WARNING: $DEB_ID: no PVH ELF vmlinux; using vmlinuz instead"
fi
if [ "$KERNEL_FILE" = vmlinuz ]; then
  rm -f "$TMP/out/vmlinux"
  cp "$VMLINUZ" "$TMP/out/vmlinuz"
fi

# --- initramfs -----------------------------------------------------------
R=$TMP/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
for m in "${MODULES[@]}"; do
  base=${m##*/}
  if [ -f "$MODDIR/$m.ko" ]; then
    cp "$MODDIR/$m.ko" "$R/lib/modules/$base.ko"
  elif [ -f "$MODDIR/$m.ko.xz" ]; then
    ensure_tool xz xz-utils; xz -dc "$MODDIR/$m.ko.xz" >"$R/lib/modules/$base.ko"
  elif [ -f "$MODDIR/$m.ko.zst" ]; then
    ensure_tool zstd zstd; zstd -dcq "$MODDIR/$m.ko.zst" >"$R/lib/modules/$base.ko"
  elif [ -f "$MODDIR/$m.ko.gz" ]; then
    gzip -dc "$MODDIR/$m.ko.gz" >"$R/lib/modules/$base.ko"
  else
    for req in "${REQUIRED_MODULES[@]}"; do
      [ "$req" != "$m" ] || die "$DEB_ID has no module $m.ko(.xz|.zst|.gz): the guest could not see the ACPI power button"
    done
    log "note: $DEB_ID has no module $m; skipped"
    continue
  fi
  echo "$base" >>"$R/lib/modules/order"
done

cat >"$R/init" <<'EOF'
#!/bin/sh
# vigil test guest init (PID 1). Generated by scripts/guest-image.sh.
/bin/busybox --install -s
mount -t devtmpfs dev /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
exec </dev/console >/dev/console 2>&1
stty -echo 2>/dev/null

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" 2>/dev/null
done

bootid=$(cat /proc/sys/kernel/random/uuid)

# Busy mode: keep dirtying $1 MiB of guest memory, so that a live migration
# has pages to send again and again. A loop rewrites /tmp/vigil-busy (tmpfs:
# guest RAM) in place, without pause, from two different MiB of random data
# taken in turn, so that every pass changes every page: QEMU sends an
# all-zero page as a flag, almost for free, so the data must not be zeros,
# and a dirty-rate estimate that compares page contents (QMP calc-dirty-rate)
# would miss a rewrite with the same bytes. "busy 0" stops it. The loop's
# pid is in /run/vigil-busy.pid.
busy_stop() {
  if [ -f /run/vigil-busy.pid ]; then
    kill "$(cat /run/vigil-busy.pid)" 2>/dev/null
    rm -f /run/vigil-busy.pid
  fi
  rm -f /tmp/vigil-busy
}
busy_start() {
  case $1 in
    '' | *[!0-9]*) echo "vigil-guest busy error: '$1' is not a size in MiB"; return 1 ;;
  esac
  busy_stop
  if [ "$1" -eq 0 ]; then
    echo "vigil-guest busy 0 MiB boot=$bootid"
    return 0
  fi
  for s in a b; do
    [ -s /tmp/vigil-busy.$s ] ||
      dd if=/dev/urandom of=/tmp/vigil-busy.$s bs=1024 count=1024 2>/dev/null
  done
  avail=$(df -k /tmp | awk 'NR == 2 { print $4 }')
  if [ "$(($1 * 1024))" -gt "$((avail - 1024))" ]; then
    echo "vigil-guest busy error: $1 MiB does not fit in /tmp (${avail} KiB free)"
    return 1
  fi
  a=$(i=0; while [ "$i" -lt "$1" ]; do echo /tmp/vigil-busy.a; i=$((i + 1)); done)
  b=$(i=0; while [ "$i" -lt "$1" ]; do echo /tmp/vigil-busy.b; i=$((i + 1)); done)
  # 1<> opens without truncating: the same pages are rewritten each pass.
  (
    while :; do
      cat $a 1<>/tmp/vigil-busy 2>/dev/null
      cat $b 1<>/tmp/vigil-busy 2>/dev/null
    done
  ) &
  echo $! >/run/vigil-busy.pid
  echo "vigil-guest busy $1 MiB boot=$bootid"
}

# ACPI power button (QMP system_powerdown): wait for the first input event
# of the "Power Button" device, then power off.
(
  for _ in $(seq 300); do
    for d in /sys/class/input/event*; do
      [ "$(cat "$d/device/name" 2>/dev/null)" = "Power Button" ] || continue
      ev=/dev/input/${d##*/}
      [ -c "$ev" ] || continue
      dd if="$ev" of=/dev/null bs=24 count=1 2>/dev/null
      echo "vigil-guest poweroff reason=acpi-power-button boot=$bootid"
      poweroff -f
    done
    sleep 0.1
  done
  echo "vigil-guest warning: no ACPI power button input device"
) &

# Console commands, one per line.
(
  while read -r line; do
    case $line in
      poweroff)
        echo "vigil-guest poweroff reason=console boot=$bootid"
        poweroff -f ;;
      reboot)
        echo "vigil-guest reboot reason=console boot=$bootid"
        reboot -f ;;
      panic)
        echo "vigil-guest panic boot=$bootid"
        echo c >/proc/sysrq-trigger ;;
      busy\ *) busy_start "${line#busy }" ;;
      "") ;;
      *) echo "vigil-guest unknown command: $line" ;;
    esac
  done
) </dev/console &  # a background job's stdin is /dev/null otherwise

echo "vigil-guest boot $bootid"
for a in $(cat /proc/cmdline); do
  case $a in
    vigil.busy=*) busy_start "${a#vigil.busy=}" ;;
  esac
done
n=0
while :; do
  n=$((n + 1))
  echo "vigil-guest counter $n boot=$bootid"
  sleep 1
done
EOF
chmod 755 "$R/init"

(cd "$R" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) |
  gzip -9n >"$TMP/out/initramfs.cpio.gz" || die "building the initramfs failed"
echo "$CMDLINE" >"$TMP/out/cmdline"

# --- install into OUTDIR -------------------------------------------------
rm -f "$OUT/stamp" "$OUT/vmlinux" "$OUT/vmlinuz"
for f in "$TMP"/out/*; do mv -f "$f" "$OUT/"; done
{
  echo "$STAMP_HEAD"
  echo "kernel-package: $DEB_ID"
  echo "kernel-version: $KVER"
  echo "kernel-file: $KERNEL_FILE$KERNEL_NOTE"
  echo "busybox: $("$BUSYBOX" 2>&1 | head -n1)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$OUT/stamp.tmp"
mv -f "$OUT/stamp.tmp" "$OUT/stamp"
log "built in $OUT: $KERNEL_FILE initramfs.cpio.gz ($DEB_ID)"
report
