#!/usr/bin/env bash
# build-image.sh - builds the gpudra driver image as an OCI image layout tar, without a Docker engine.
#
# Usage: hack/build-image.sh OUT_TAR [TAG]
#   OUT_TAR  where to write the image (an OCI image layout tar: `ctr images import OUT_TAR`,
#            `podman load -i OUT_TAR`, `skopeo copy oci-archive:OUT_TAR ...`)
#   TAG      image name, default $IMAGE or localhost/gpudra/gpudra:dev
#
# Contents (one layer, built reproducibly: sorted entries, mtime 0, uid/gid 0):
#   /usr/bin/<name>         every command under cmd/ (go build -trimpath, cgo on: go-nvml dlopens
#                           libnvidia-ml.so.1 at run time, so the binaries are dynamically linked)
#   /usr/bin/nvidia-cdi-hook  the NVIDIA Container Toolkit hook, at the version go.mod pins
#                           (hack/tools/tools.go); the CDI specs the plugin writes name this path
#   the shared libraries the binaries need (from ldd, same paths as on the build machine, with the
#   dynamic loader), /bin/busybox (Debian busybox-static) and its applets (sh, cp, ls, ...) in /bin,
#   /etc/passwd, /etc/group, /etc/nsswitch.conf, /tmp
#   entrypoint /usr/bin/gpu-kubelet-plugin
#
# The Go caches are the caller's (go env GOMODCACHE / GOCACHE), so a rebuild after a small change takes
# seconds. Environment: IMAGE (default tag), GOARCH is the build machine's (no cross builds: ldd and
# busybox come from this machine).
set -euo pipefail

OUT=${1:-}
TAG=${2:-${IMAGE:-localhost/gpudra/gpudra:dev}}
[ -n "$OUT" ] || { sed -n '2,22p' "$0"; exit 2; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
ENTRYPOINT=/usr/bin/gpu-kubelet-plugin
HOOK_PKG=github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-cdi-hook

log() { printf '[%(%H:%M:%S)T] build-image: %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# cgo needs gcc; the applets need busybox-static. Install them when missing and we may (root + apt).
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
static_busybox() { [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && ! ldd /bin/busybox >/dev/null 2>&1; }
static_busybox || need+=(busybox-static)   # Debian's plain "busybox" is dynamically linked
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing ${need[*]}: install them first"
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v go >/dev/null || die "go not found in PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpudra-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
mkdir -p "$ROOT"/{bin,usr/bin,etc,tmp,proc,sys,dev,root,var/run}
chmod 0755 "$ROOT" "$ROOT"/{bin,usr,usr/bin,etc,proc,sys,dev,var,var/run}
chmod 0700 "$ROOT/root"
chmod 1777 "$ROOT/tmp"

# ---------------------------------------------------------------- binaries
cd "$REPO"
ARCH=$(go env GOARCH)
export CGO_ENABLED=1
# go-nvml's header marks dozens of functions deprecated; gcc would print thousands of lines of warnings.
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -Wno-deprecated-declarations"
# -mod=readonly (not the caller's GOFLAGS' -mod, if any): the image is built from go.mod/go.sum as committed.
build=(go build -mod=readonly -trimpath -ldflags "-s -w")
t0=$SECONDS
cmds=()
for d in cmd/*/; do
  name=$(basename "$d")
  ls "$d"*.go >/dev/null 2>&1 || continue   # only directories that hold a main package
  cmds+=("$name")
done
[ ${#cmds[@]} -gt 0 ] || die "no commands under cmd/"
printf '%s\n' "${cmds[@]}" | grep -qx "$(basename "$ENTRYPOINT")" || die "cmd/$(basename "$ENTRYPOINT") missing"
log "go build ${cmds[*]} nvidia-cdi-hook (cgo, -trimpath)"
for name in "${cmds[@]}"; do
  "${build[@]}" -o "$ROOT/usr/bin/$name" "./cmd/$name"
done
# Built from the repo, so go.mod's require (kept by hack/tools/tools.go) decides the toolkit version;
# the toolkit's Makefile stamps that version with -X (else `nvidia-cdi-hook --version` says "unknown").
hookver=$(go list -mod=readonly -m -f '{{.Version}}' github.com/NVIDIA/nvidia-container-toolkit)
go build -mod=readonly -trimpath -o "$ROOT/usr/bin/nvidia-cdi-hook" \
  -ldflags "-s -w -X github.com/NVIDIA/nvidia-container-toolkit/internal/info.version=${hookver#v}" "$HOOK_PKG"
log "binaries built in $((SECONDS - t0))s"

# ---------------------------------------------------------------- shared libraries
# ldd prints "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the loader as
# "/lib64/ld-linux-x86-64.so.2 (0x...)". Copy each with symlinks resolved, to the path ldd names: the
# binaries' PT_INTERP is that loader path, and Debian's loader searches /lib/<triplet> and
# /usr/lib/<triplet> without an ld.so.cache. libnvidia-ml.so.1 is not listed (dlopen at run time): it
# comes from the host's driver root.
libs=$(for b in "$ROOT"/usr/bin/*; do
  if ldd "$b" >/dev/null 2>&1; then
    ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
  fi
done | sort -u)
for l in $libs; do
  mkdir -p "$ROOT$(dirname "$l")"
  cp -L "$l" "$ROOT$l"
  chmod 0755 "$ROOT$l"
done
log "shared libraries: $(tr '\n' ' ' <<< "$libs")"

# ---------------------------------------------------------------- busybox and /etc
cp /bin/busybox "$ROOT/bin/busybox"
for a in $("$ROOT/bin/busybox" --list); do
  [ "$a" = busybox ] || [ -e "$ROOT/bin/$a" ] || ln -s busybox "$ROOT/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOT/etc/group"
# Go's resolver reads this; "files dns" keeps name lookups in Go (no NSS modules in the image).
printf 'hosts: files dns\n' > "$ROOT/etc/nsswitch.conf"
chmod 0644 "$ROOT"/etc/*
find "$ROOT/usr/bin" -type f -exec chmod 0755 {} +

# ---------------------------------------------------------------- OCI image layout tar
# One uncompressed layer, an image config, a manifest and an index that names the image
# (io.containerd.image.name is what `ctr images import` tags it as).
tarflags=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)
blob() {  # blob FILE -> "DIGEST SIZE", moves FILE into blobs/sha256
  local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  mv "$1" "$WORK/oci/blobs/sha256/$d"; echo "$d $s"
}
mkdir -p "$WORK/oci/blobs/sha256"
tar "${tarflags[@]}" -C "$ROOT" -cf "$WORK/layer.tar" .
read -r ld lsz < <(blob "$WORK/layer.tar")
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["%s"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"gpudra","org.opencontainers.image.description":"Kubernetes DRA driver for NVIDIA GPUs"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"hack/build-image.sh"}]}' \
  "$ARCH" "$ENTRYPOINT" "$ld" > "$WORK/config.json"
read -r cfgd csz < <(blob "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$cfgd" "$csz" "$ld" "$lsz" > "$WORK/manifest.json"
read -r md msz < <(blob "$WORK/manifest.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$md" "$msz" "$ARCH" "$TAG" "${TAG##*:}" > "$WORK/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$WORK/oci/oci-layout"
mkdir -p "$(dirname "$OUT")"
tar "${tarflags[@]}" -C "$WORK/oci" -cf "$OUT.tmp" oci-layout index.json blobs
mv "$OUT.tmp" "$OUT"
log "wrote $OUT ($TAG, manifest sha256:$md, layer $((lsz / 1048576)) MiB) in $((SECONDS - t0))s"
