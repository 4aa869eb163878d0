#!/usr/bin/env bash
# Provisions the reference interpreter (python3 + torch + transformers + safetensors) for the
# Python worker of src/Reference (see src/Reference/PROTOCOL.md), idempotently.
#
#   HARNESS_PYTHON=$(ci/reference-env.sh)     # build once (~2 min, needs root), then seconds
#   ci/reference-env.sh --check               # same, then runs the worker self-test through it
#
# Debian forky is newer than this host, so the interpreter lives in a forky chroot at
# $HARNESS_CACHE/forky (default HARNESS_CACHE=$HOME/.cache/harness), built with mmdebstrap into a
# temp dir that is renamed into place only when complete and verified. The wrapper
# $HARNESS_CACHE/reference-python mounts /proc in the chroot when needed and runs its python3 with
# a clean environment (thread/HF/HARNESS vars passed through, HARNESS_HOST_ROOT set), and, with HARNESS_SANDBOX=1 (set by
# the harness), as a sandbox (see the wrapper's comment: no network, user nobody, limits, read-only host view and root).
# If HARNESS_PYTHON is already set, that interpreter is only verified and printed back.
# Progress goes to stderr; the last stdout line is the interpreter path.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${HARNESS_CACHE:-$HOME/.cache/harness}"
root="$cache/forky"
marker="$root/.harness-ready"
wrapper="$cache/reference-python"
view=/harness-host   # where the sandboxed worker sees the host's files (read-only)
packages="python3-transformers,python3-torch,python3-safetensors,libopenblas0-pthread"
# accelerate: the reference loads with device_map straight to its device (the streamed oracle, compare --device cuda).
# Judging other engines (README, "Judging another engine"): llama.cpp's server, converter and C library, the GGUF
# tools, accelerate (transformers' tp_plan="auto"), sentencepiece (the tests train the tiny model's tokenizer) and protobuf
# (transformers reads that SentencePiece model through it).
packages+=",llama.cpp-tools,libllama0,libggml0,python3-gguf,python3-accelerate,python3-sentencepiece,python3-protobuf"
packages+=",python3-av"   # compare --video FILE: the worker decodes videos with PyAV (ffmpeg)
# timm (Gemma3n's vision tower: timm's MobileNetV5 inside transformers' TimmWrapperModel) is not packaged for Debian forky.
# The exact release of the GPU machine's venv is vendored: ci/vendor/timm-$timm_version.tar.gz holds the timm package and
# its dist-info from the PyPI wheel (pure Python; Apache-2.0, ci/vendor/timm-LICENSE), checked against $timm_sha256 and
# unpacked into the chroot's site directory (install_timm). Its dependencies are Debian's: torch, torchvision, pyyaml,
# huggingface_hub, safetensors.
packages+=",python3-torchvision,python3-yaml,python3-huggingface-hub"
timm_version=1.0.29
timm_sha256=7478c60c58236dd74ea18e8e62bbe2e80d9d4d466de0aa8f0fd61e673f896a2a
timm_tarball="$repo/ci/vendor/timm-$timm_version.tar.gz"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { echo "reference-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

verify_imports() { # interpreter -> prints versions on stderr
  "$1" -c 'import sys, torch, transformers, safetensors, timm
assert timm.is_model("mobilenetv5_300m_enc"), "timm has no mobilenetv5_300m_enc"
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "safetensors", safetensors.__version__, "timm", timm.__version__)' >&2 || die "$1 cannot import torch, transformers, safetensors, timm"
}

run_selftest() {
  log "self-test of the worker through $1"
  "${HARNESS_SELFTEST_PYTHON:-python3}" "$repo/src/Reference/python/selftest.py" "$1" >&2
}

unmount_proc() { # dir: unmount DIR/proc if mounted (before any rm -rf of a chroot)
  if mountpoint -q "$1/proc" 2>/dev/null; then umount "$1/proc" || umount -l "$1/proc"; fi
}

remove_chroot() {
  unmount_proc "$1"
  rm -rf --one-file-system "$1"
}

ensure_mmdebstrap() {
  command -v mmdebstrap >/dev/null && return
  log "installing mmdebstrap"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >&2
}

build_chroot() {
  [[ $(id -u) == 0 ]] || die "building the chroot needs root (mmdebstrap, chroot, mount)"
  ensure_mmdebstrap
  mkdir -p "$cache"
  local tmp
  for tmp in "$cache"/forky.tmp.*; do  # leftovers of interrupted builds
    if [[ -d $tmp ]]; then log "removing incomplete $tmp"; remove_chroot "$tmp"; fi
  done
  tmp="$cache/forky.tmp.$$"
  trap 'remove_chroot "'"$tmp"'"' EXIT
  log "building forky chroot in $tmp (about 2 minutes)"
  mmdebstrap --variant=apt --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Check-Valid-Until "false"' \
    forky "$tmp" >&2
  install_timm "$tmp"
  mount -t proc proc "$tmp/proc"
  local versions
  versions="$(chroot "$tmp" /usr/bin/env -i PATH=/usr/bin:/bin /usr/bin/python3 -c 'import sys, torch, transformers, safetensors, timm
print("python=" + sys.version.split()[0]); print("torch=" + torch.__version__); print("timm=" + timm.__version__)
print("transformers=" + transformers.__version__); print("safetensors=" + safetensors.__version__)
print("blas=" + __import__("os").path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3"))')" \
    || die "the new chroot cannot import torch, transformers, safetensors, timm"
  unmount_proc "$tmp"
  printf '%s\nbuilt=%s\n' "$versions" "$(date -u +%FT%TZ)" > "$tmp/.harness-ready"
  if [[ -e $root ]]; then log "replacing $root (no ready-marker)"; remove_chroot "$root"; fi
  mv "$tmp" "$root"
  trap - EXIT
  log "chroot ready: $(tr '\n' ' ' < "$marker")"
}

missing_packages() { # chroot dir -> the names in $packages not installed there, one a line
  local installed p
  # shellcheck disable=SC2086  # one word per package
  installed="$(chroot "$1" /usr/bin/dpkg-query -W -f='${Package} ${db:Status-Status}\n' ${packages//,/ } 2>/dev/null || true)"
  for p in ${packages//,/ }; do
    grep -qx "$p installed" <<< "$installed" || echo "$p"
  done
}

install_missing() { # a ready chroot built before a package joined $packages gets it with the chroot's apt
  local missing
  missing="$(missing_packages "$root" | tr '\n' ' ')"
  [[ -z ${missing// /} ]] && return
  [[ $(id -u) == 0 ]] || die "the chroot $root lacks $missing; installing them needs root"
  log "installing $missing into $root"
  local apt=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive)
  "${apt[@]}" apt-get update -q >&2 || die "apt-get update failed in $root"
  # shellcheck disable=SC2086  # one word per package
  "${apt[@]}" apt-get install -y -q --no-install-recommends $missing >&2 || die "apt-get install $missing failed in $root"
  missing="$(missing_packages "$root" | tr '\n' ' ')"
  [[ -z ${missing// /} ]] || die "still missing in $root after apt-get install: $missing"
}

chroot_python() { # chroot dir, args... -> runs the chroot's python3 with a clean environment
  local dir=$1; shift
  chroot "$dir" /usr/bin/env -i PATH=/usr/bin:/bin LANG=C.UTF-8 /usr/bin/python3 "$@"
}

timm_installed() { # chroot dir -> 0 when the vendored timm release is installed there (its dist-info; no import)
  chroot_python "$1" -c "import importlib.metadata as m, sys
try: sys.exit(m.version('timm') != '$timm_version')
except m.PackageNotFoundError: sys.exit(1)" 2>/dev/null
}

install_timm() { # chroot dir: the vendored timm unpacked into its site directory (idempotent; a ready chroot without it gets it)
  timm_installed "$1" && return
  [[ $(id -u) == 0 ]] || die "the chroot $1 lacks timm $timm_version; installing it needs root"
  [[ -f $timm_tarball ]] || die "no vendored timm at $timm_tarball"
  echo "$timm_sha256  $timm_tarball" | sha256sum --check --quiet - >&2 || die "$timm_tarball does not match its sha256 $timm_sha256"
  local site
  site="$(chroot_python "$1" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || die "cannot find the site directory of $1"
  log "installing timm $timm_version into $1$site"
  mkdir -p "$1$site"
  rm -rf "$1$site/timm" "$1$site"/timm-*.dist-info
  tar -xzf "$timm_tarball" -C "$1$site" --no-same-owner || die "cannot unpack $timm_tarball"
  chroot_python "$1" -m compileall -q "$site/timm" >/dev/null || die "cannot byte-compile timm in $1"
  timm_installed "$1" || die "timm $timm_version is still missing in $1 after unpacking"
}

write_wrapper() {
  local tmp="$wrapper.tmp.$$"
  cat > "$tmp" <<EOF
#!/usr/bin/env bash
# Written by ci/reference-env.sh: python3 of the forky chroot $root.
# With HARNESS_SANDBOX=1 (the harness's worker supervisor sets it) python runs in a sandbox: its own network namespace
# (no network: only a loopback of its own, which gloo's TP=2 runs of judge --dump need; HARNESS_SANDBOX_NETWORK=host
# keeps the host's) and mount namespace (its mounts vanish with it), as the unprivileged user nobody, with
# resource limits (no core files, open files, file size), the chroot read-only but for /tmp/harness (the folders the
# harness shares with it), the host's files read-only at $view (without the host's /proc, /sys, /dev), and a private
# scratch folder /tmp/harness/worker.run-PID-ID as HOME and TMPDIR (removed by the harness; a killed run's by the next).
root='$root'
view='$view'
mountpoint -q "\$root/proc" || mount -t proc proc "\$root/proc" || exit 125
env=(PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1)
while IFS= read -r name; do
  [[ \$name == HARNESS_HOST_ROOT || \$name == HARNESS_SANDBOX_STAGE ]] || env+=("\$name=\${!name}")
done < <(compgen -e | grep -E '^(OMP_|OPENBLAS_|GOTO_|MKL_|TORCH_|PYTORCH_|HF_|TRANSFORMERS_|HARNESS_|PYTHONHASHSEED\$|PYTHONFAULTHANDLER\$|PYTHONWARNINGS\$)')
if [[ \${HARNESS_SANDBOX:-} != 1 ]]; then
  exec chroot "\$root" /usr/bin/env -i HARNESS_HOST_ROOT="\$root" "\${env[@]}" /usr/bin/python3 "\$@"
fi
sandbox_fail() { echo "reference-python: sandbox: \$*" >&2; exit 125; }
if [[ \${HARNESS_SANDBOX_STAGE:-} != inside ]]; then
  # unshare without --fork execs in this process: the harness's pid stays python's pid (kill, memory watch)
  # HARNESS_SANDBOX_NETWORK=host: all but the network namespace (a worker that starts a server the harness must reach)
  namespaces=(--mount --net); [[ \${HARNESS_SANDBOX_NETWORK:-} == host ]] && namespaces=(--mount)
  exec env HARNESS_SANDBOX_STAGE=inside unshare "\${namespaces[@]}" --propagation private -- "\$0" "\$@"
fi
if [[ \${HARNESS_SANDBOX_NETWORK:-} != host ]]; then
  # the namespace's own loopback, up: isolated from the host's (a port there stays unreachable), usable by gloo
  PATH="\$PATH:/usr/sbin:/sbin" ip link set lo up || sandbox_fail "cannot bring up the sandbox's own loopback (iproute2's ip)"
fi
scratch="/tmp/harness/worker.run-\$\$-\$(tr -d '-' < /proc/sys/kernel/random/uuid)"
mkdir -p "\$root/tmp/harness" "\$root\$view" && mkdir -m 700 "\$root\$scratch" && chown 65534:65534 "\$root\$scratch" \\
  || sandbox_fail "cannot make the scratch folder \$root\$scratch"
mount --bind "\$root/tmp/harness" "\$root/tmp/harness" || sandbox_fail "cannot bind /tmp/harness"
mount --rbind / "\$root\$view" || sandbox_fail "cannot bind the host at \$view"
for m in "\$root\$view\$root/proc" "\$root\$view/proc" "\$root\$view/sys" "\$root\$view/dev"; do
  if mountpoint -q "\$m"; then umount -R -l "\$m" || sandbox_fail "cannot hide \$m"; fi
done
while IFS= read -r m; do
  m=\$(printf '%b' "\$m")
  mount -o remount,bind,ro "\$m" 2>/dev/null || mount -o remount,bind,ro,nosuid,nodev "\$m" || sandbox_fail "cannot make \$m read-only"
done < <(findmnt -rn -o TARGET -R "\$root\$view")
mount --rbind "\$root" "\$root" && mount -o remount,bind,ro "\$root" || sandbox_fail "cannot make \$root read-only"
ulimit -c 0 && ulimit -n 4096 && ulimit -f \$((256 * 1024 * 1024)) || sandbox_fail "cannot set the resource limits"
exec chroot --userspec=65534:65534 "\$root" /usr/bin/env -i HARNESS_HOST_ROOT="\$root" "\${env[@]}" HARNESS_HOST_VIEW="\$view" \\
  HARNESS_SCRATCH="\$scratch" HOME="\$scratch" TMPDIR="\$scratch" /usr/bin/python3 "\$@"
EOF
  chmod 755 "$tmp"
  mv "$tmp" "$wrapper"
}

if [[ -n ${HARNESS_PYTHON:-} ]]; then
  log "HARNESS_PYTHON is set; verifying $HARNESS_PYTHON"
  verify_imports "$HARNESS_PYTHON"
  if (( check )); then run_selftest "$HARNESS_PYTHON"; fi
  echo "$HARNESS_PYTHON"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one build at a time; a second caller waits and then finds it ready
trap 'exit 130' INT
trap 'exit 143' TERM  # so that the EXIT trap removes a half-built chroot
if [[ -f $marker && -x $root/usr/bin/python3 ]]; then
  log "chroot ready at $root: $(tr '\n' ' ' < "$marker")"
  install_missing
  install_timm "$root"
else
  build_chroot
  fresh=1
fi
write_wrapper
if [[ -n ${fresh:-} ]]; then verify_imports "$wrapper"; fi
if (( check )); then run_selftest "$wrapper"; fi
echo "$wrapper"
