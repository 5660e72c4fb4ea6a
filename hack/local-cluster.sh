#!/usr/bin/env bash
# local-cluster.sh - a real single-node Kubernetes cluster on this machine for gpudra's demo and e2e tests,
# without Docker, kind or a container registry.
#
# Kubernetes (v1.37.x), containerd (v2.x) and helm (v3.x) are built from the Go module proxy; etcd,
# runc, the CNI plugins and busybox come from Debian; the pause, busybox and driver images are
# assembled locally as OCI archives and imported with ctr. Every daemon runs as a background host
# process with a PID file and a log under DIR/run. Needs root (kubelet, mounts, cgroups, CNI bridge).
#
# Usage: hack/local-cluster.sh COMMAND
#   build        install Debian packages, build binaries and images (starts nothing)
#   up           build what is missing, start etcd, kube-apiserver, kube-controller-manager,
#                kube-scheduler, containerd and kubelet, import the images, wait for the node to be
#                Ready. Idempotent: running parts are kept, not restarted; configs are rewritten, so
#                `down` + `up` applies a change. A warm `up` (after `down`) takes seconds.
#   image [TAG]  build the driver image (hack/build-image.sh, default localhost/gpudra/gpudra:dev) into
#                DIR/images/gpudra.tar and import it into the cluster's containerd, replacing an older
#                import of the same tag (if the cluster is down: imported by the next `up`)
#   restart-kubelet  stops the kubelet and starts it again (pods and plugins keep running), waits
#                until the node is Ready: what the e2e tests use to check that the plugins register again
#   status       processes, node, imported images
#   env          prints `export KUBECONFIG=... PATH=... CONTAINERD_ADDRESS=... CONTAINERD_NAMESPACE=...` and
#                `export CONTAINERD_CONFIG=...` (the containerd config, for `gpudra doctor`)
#                (use: eval "$(hack/local-cluster.sh env)"; then kubectl, helm and ctr work as usual)
#   down         stops what this script started (PID files), unmounts, removes the CNI bridge,
#                restores the sysctls kubelet changed, removes the kubepods cgroups (etcd data and the
#                imported images stay: the next `up` finds the cluster as it was, minus the pods)
#   clean        down, then removes DIR/run (etcd, containerd root, certs), /var/lib/kubelet and the
#                other paths listed below (keeps DIR/cache, DIR/bin and DIR/images: no rebuild)
#
# DIR: $GPUDRA_CLUSTER_DIR, else /var/tmp/gpudra-cluster (outside the repository, so the caches survive a
# fresh clone). It holds cache/ (Go module and build caches of the Kubernetes/containerd/helm builds,
# ~6 GB), bin/, src/, images/ and run/ (certs, configs, etcd data, containerd root, logs in run/logs,
# PID files in run/pids). Outside DIR: Debian packages, /var/lib/kubelet (kubelet root; DRA plugin
# sockets live in /var/lib/kubelet/plugins{,_registry}), /var/log/pods, /var/log/containers,
# /run/containerd/{runc,s} (runc/shim state), /var/lib/cni/results (libcni cache), the driver's
# per-claim CDI specs /var/run/cdi/k8s.*-claim_*.json and host state /var/lib/gpudra, and the address
# 10.96.0.1/32 on lo while the cluster is up (see api_vip_up).
#
# Knobs (environment): K8S_VERSION (v1.37.1: the proxy refuses the v1.37.2 zip with 403),
# CONTAINERD_VERSION (v2.4.2), HELM_VERSION (v3.22.0), IMAGE (driver image tag), NODE_NAME (hostname),
# NODE_IP (address of the default-route interface), LC_GOMODCACHE / LC_GOCACHE (default
# DIR/cache/{gomod,gobuild}). The driver image is built with the caller's own Go caches, not these.
set -euo pipefail

CMD=${1:-help}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${GPUDRA_CLUSTER_DIR:-/var/tmp/gpudra-cluster}
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.37.1}
STAGING_VERSION=v0.${K8S_VERSION#v1.}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
# Debian (bookworm) has no helm package (apt-cache policy helm: nothing), so it is built like the rest.
HELM_VERSION=${HELM_VERSION:-v3.22.0}
IMAGE=${IMAGE:-localhost/gpudra/gpudra:dev}
BIN=$DIR/bin SRC=$DIR/src IMG=$DIR/images RUN=$DIR/run
PKI=$RUN/pki LOGS=$RUN/logs PIDS=$RUN/pids
KCFG=$RUN/admin.kubeconfig
CSOCK=$RUN/containerd/containerd.sock
BRIDGE=cni-e2e0
POD_SUBNET=10.88.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_VIP=10.96.0.1   # ClusterIP of the "kubernetes" service: the first address of SERVICE_CIDR
API_PORT=443        # the service's port; see api_vip_up for why the API server listens on it directly
LC_GOMODCACHE=${LC_GOMODCACHE:-$DIR/cache/gomod}
LC_GOCACHE=${LC_GOCACHE:-$DIR/cache/gobuild}
export PATH=$BIN:/usr/local/go/bin:$PATH

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kc() { "$BIN/kubectl" --kubeconfig "$KCFG" "$@"; }
ctrk() { "$BIN/ctr" --address "$CSOCK" -n k8s.io "$@"; }
node_name() { echo "${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}"; }
node_ip() {
  if [ -n "${NODE_IP:-}" ]; then echo "$NODE_IP"; return; fi
  local dev; dev=$(ip -4 route show default | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')
  [ -n "$dev" ] || die "no default route: set NODE_IP (must not be a loopback address)"
  ip -4 -o addr show dev "$dev" | awk '{split($4,a,"/"); print a[1]; exit}'
}
# The cluster's own builds use their own Go caches under DIR (they are big and survive a fresh clone);
# the driver image is built with the caller's caches, which already hold the project's dependencies.
cluster_go() { ( export GOMODCACHE=$LC_GOMODCACHE GOCACHE=$LC_GOCACHE GOFLAGS=-buildvcs=false; "$@" ); }

# ---------------------------------------------------------------- packages
packages() {
  local want=(etcd-server runc containernetworking-plugins busybox-static openssl iproute2 curl tar gcc libc6-dev)
  local p missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  # etcd-server's postinst does not start etcd on a machine without systemd/init scripts running.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- builds
# Each build leaves a stamp file in DIR/bin, so a second run skips it.
build_k8s() {
  local stamp=$BIN/.k8s-$K8S_VERSION
  [ -f "$stamp" ] && return
  log "building Kubernetes $K8S_VERSION (first time: ~1 min download, ~12 min build on 2 cores)"
  mkdir -p "$SRC/k8s" "$BIN"; cd "$SRC/k8s"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') || true
  [ -n "$gomod" ] && [ -f "$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.zip" ] ||
    die "cannot download k8s.io/kubernetes@$K8S_VERSION (v1.37.2's zip is refused by the proxy: try K8S_VERSION=v1.37.1)"
  # k8s.io/kubernetes cannot be required as is: its go.mod replaces every staging module (k8s.io/api,
  # k8s.io/client-go, ...) with ./staging/..., and replace directives of a dependency are ignored. Pin
  # each staging module to its published v0.X.Y twin in a throwaway main module instead.
  {
    printf 'module local/k8sbin\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=>/{print $1}' | grep -v '^k8s.io/sample-' |
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
    printf ')\n'
  } > go.mod
  cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
  rm -f go.sum; go mod tidy
  # Without these -X flags the binaries report v0.0.0 and kubectl/kubelet version skew checks complain.
  local ld="-s -w" minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
  touch "$stamp"; cd - >/dev/null
}

build_containerd() {
  local stamp=$BIN/.containerd-$CONTAINERD_VERSION
  [ -f "$stamp" ] && return
  log "building containerd $CONTAINERD_VERSION (~2 min)"
  local p=github.com/containerd/containerd/v2
  # The build tags drop the snapshotters that need cgo/kernel headers; overlayfs is all we use.
  GOBIN=$BIN CGO_ENABLED=0 go install -trimpath -tags "urfave_cli_no_docs no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $p/version.Version=$CONTAINERD_VERSION -X $p/version.Revision=local" \
    "$p/cmd/containerd@$CONTAINERD_VERSION" "$p/cmd/ctr@$CONTAINERD_VERSION" \
    "$p/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  touch "$stamp"
}

build_helm() {
  local stamp=$BIN/.helm-$HELM_VERSION
  [ -f "$stamp" ] && [ -x "$BIN/helm" ] && return
  log "building helm $HELM_VERSION (~3 min)"
  mkdir -p "$SRC/helm" "$BIN"; cd "$SRC/helm"
  # Own throwaway main module (like Kubernetes above): helm's go.mod decides the dependency versions.
  printf 'module local/helmbin\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION" > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > tools.go
  rm -f go.sum; go mod tidy
  # helm's Makefile stamps its version and the Kubernetes version it assumes for `helm template` /
  # `helm lint` (.Capabilities.KubeVersion: client-go v0.X.Y -> 1.X); without -X, `helm version` says
  # "v3.22" and the capabilities are a hard-coded default.
  local cg minor h=helm.sh/helm/v3
  cg=$(go list -m -f '{{.Version}}' k8s.io/client-go); minor=${cg#v0.}; minor=${minor%%.*}
  GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 go build -trimpath -o "$BIN/helm" -ldflags "-s -w \
    -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor" $h/cmd/helm
  touch "$stamp"; cd - >/dev/null
}

build_pause() {
  [ -x "$BIN/pause" ] && return
  mkdir -p "$SRC/pause"
  cat > "$SRC/pause/main.go" <<'EOF'
// pause: sandbox process. Sleeps until SIGINT/SIGTERM, reaps zombies on SIGCHLD.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	chld := make(chan os.Signal, 16)
	signal.Notify(chld, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-chld:
			for {
				var ws syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
EOF
  printf 'module local/pause\n\ngo 1.22\n' > "$SRC/pause/go.mod"
  (cd "$SRC/pause" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$BIN/pause" .)
}

# mkimage NAME ROOTFS_DIR ENTRYPOINT_JSON OUT_TAR: single-layer OCI image layout tar for `ctr images import`.
# The tar flags make it reproducible (same rootfs, same digests). hack/build-image.sh does the same for
# the driver image.
mkimage() {
  local name=$1 rootfs=$2 entry=$3 out=$4 t ld ls cd_ cs md ms
  t=$(mktemp -d); mkdir -p "$t/blobs/sha256"
  local tarflags=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)
  tar "${tarflags[@]}" -C "$rootfs" -cf "$t/layer.tar" .
  ld=$(sha256sum "$t/layer.tar" | cut -d' ' -f1); ls=$(stat -c %s "$t/layer.tar"); mv "$t/layer.tar" "$t/blobs/sha256/$ld"
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin:/usr/bin:/sbin"],"Entrypoint":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entry" "$ld" > "$t/c"
  cd_=$(sha256sum "$t/c" | cut -d' ' -f1); cs=$(stat -c %s "$t/c"); mv "$t/c" "$t/blobs/sha256/$cd_"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cd_" "$cs" "$ld" "$ls" > "$t/m"
  md=$(sha256sum "$t/m" | cut -d' ' -f1); ms=$(stat -c %s "$t/m"); mv "$t/m" "$t/blobs/sha256/$md"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$md" "$ms" "$name" "${name##*:}" > "$t/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$t/oci-layout"
  tar "${tarflags[@]}" -C "$t" -cf "$out" oci-layout index.json blobs
  rm -rf "$t"
}

# The pause (sandbox) and busybox images: no registry to pull them from.
build_images() {
  mkdir -p "$IMG"
  if [ ! -f "$IMG/busybox.tar" ]; then
    local r=$IMG/rootfs-busybox; rm -rf "$r"; mkdir -p "$r"/{bin,etc,tmp,proc,sys,dev,root,var/run}
    cp /bin/busybox "$r/bin/busybox"
    for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"; echo 'root:x:0:' > "$r/etc/group"
    mkimage localhost/e2e/busybox:1 "$r" '["/bin/sh"]' "$IMG/busybox.tar"
  fi
  if [ ! -f "$IMG/pause.tar" ]; then
    local r=$IMG/rootfs-pause; rm -rf "$r"; mkdir -p "$r"; cp "$BIN/pause" "$r/pause"
    mkimage localhost/e2e/pause:1 "$r" '["/pause"]' "$IMG/pause.tar"
  fi
}

build_all() {
  packages
  command -v go >/dev/null || die "go not found"
  cluster_go build_k8s; cluster_go build_containerd; cluster_go build_helm; cluster_go build_pause
  build_images
}

# ---------------------------------------------------------------- certs + configs
make_certs() {
  local ip=$1; mkdir -p "$PKI"; cd "$PKI"
  [ -f ca.crt ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=local-e2e-ca" 2>/dev/null
  # Re-issued when the node IP changes (a new network after a reboot): the SAN must hold it.
  if [ ! -f apiserver.crt ] || ! openssl x509 -in apiserver.crt -noout -text | grep -q "IP Address:$ip,"; then
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:'"$API_VIP"',DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$ip" > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
  fi
  if [ ! -f admin.crt ]; then  # one system:masters client cert for every component (test cluster)
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' > admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile admin.ext 2>/dev/null
  fi
  [ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
  cd - >/dev/null
  cat > "$KCFG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$PKI/admin.crt", client-key: "$PKI/admin.key"}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
}

write_configs() {
  mkdir -p "$RUN/containerd" "$RUN/cni/net.d" "$RUN/cni/ipam" "$RUN/kubelet" "$RUN/pod-logs"
  cat > "$RUN/containerd/config.toml" <<EOF
version = 4
root = '$RUN/containerd/root'
state = '$RUN/containerd/state'
imports = []

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    # No registry: the sandbox image is the locally built pause image, pinned so that it is never GCed.
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'localhost/e2e/pause:1'
  [plugins.'io.containerd.cri.v1.runtime']
    # CDI is always on in containerd 2.x; these are the defaults, spelled out (the driver writes its
    # per-claim specs to /var/run/cdi).
    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']
    # This VM's root lacks CAP_SYS_RESOURCE: runc cannot set the sandbox's oom_score_adj=-998
    # ("can't get final child's PID from pipe: EOF"); clamp to containerd's own value instead.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '$RUN/cni/net.d'
  [plugins.'io.containerd.server.v1.grpc']
    address = '$CSOCK'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '$CSOCK.ttrpc'
  # The debug server serves Go's /debug/pprof/ (containerd's CPU profile while the DRA bench runs:
  # curl --unix-socket $CSOCK.debug http://d/debug/pprof/profile?seconds=20).
  [plugins.'io.containerd.server.v1.debug']
    address = '$CSOCK.debug'
EOF
  # Pods get addresses on a local bridge only: no masquerade, no default route out of the machine; the
  # one route they get sends the service CIDR to the host (the bridge's address), see api_vip_up.
  cat > "$RUN/cni/net.d/10-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "e2e",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "$SERVICE_CIDR"}],
              "dataDir": "$RUN/cni/ipam"}}
  ]
}
EOF
  cat > "$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: "unix://$CSOCK"
cgroupDriver: cgroupfs
failCgroupV1: false          # 1.35+ refuses cgroup v1 hosts by default
failSwapOn: false
makeIPTablesUtilChains: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: "$RUN/pod-logs"
serializeImagePulls: false
# A pod whose claims cannot be prepared yet (driver not registered) is retried only at the next
# resync (syncFrequency, default 1m, +50% jitter); kubelet is not woken by plugin registration.
syncFrequency: 10s
imageGCHighThresholdPercent: 100   # never garbage-collect the imported images: they cannot be pulled again
imageGCLowThresholdPercent: 99
# The defaults (10% disk free) evict everything on a full-ish build machine.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
EOF
}

# ---------------------------------------------------------------- processes
alive() { local f=$PIDS/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }
start_bg() {  # start_bg NAME CMD...   (skips if already running)
  local name=$1; shift
  if alive "$name"; then log "$name already running (pid $(cat "$PIDS/$name.pid"))"; return; fi
  mkdir -p "$LOGS" "$PIDS"
  # setsid: the daemons outlive this script and do not get its terminal's signals.
  setsid "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
  log "started $name (pid $!, log $LOGS/$name.log)"
}
wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local n=$1 what=$2 i; shift 2
  for ((i = 0; i < n * 2; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "timed out after ${n}s waiting for $what (logs: $LOGS)"
}
stop_pid() {  # stop_pid NAME [TIMEOUT]
  local name=$1 t=${2:-15} f=$PIDS/$1.pid p i
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < t * 4; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    log "stopped $name (pid $p)"
  fi
  rm -f "$f"
}

# ---------------------------------------------------------------- images in containerd
# import_tar TAR NAME [replace]: imports TAR unless NAME is there already; with "replace", removes an
# older NAME first (`ctr images import` of a name that exists keeps pointing at the old image on some
# containerd versions; rm + import is unambiguous). Running containers keep their snapshot.
# Not `ctr images ls -q | grep -q NAME` under pipefail: grep exits at the first match, ctr dies of
# SIGPIPE on its next line, and the pipeline fails although the image is there.
has_image() { local l; l=$(ctrk images ls -q 2>/dev/null) && grep -qxF "$1" <<< "$l"; }
import_tar() {
  local tar=$1 name=$2 mode=${3:-} out
  if has_image "$name"; then
    [ "$mode" = replace ] || return 0
    ctrk images rm "$name" >/dev/null 2>&1
  fi
  # ctr prints a cgroup v1 deprecation warning on every call (this VM has cgroup v1): keep it for errors.
  out=$(ctrk images import --platform "linux/$(go env GOARCH)" "$tar" 2>&1) || die "ctr images import $tar: $out"
  has_image "$name" || die "$tar did not import as $name: $out"
  log "imported $name"
  # The CRI plugin adds a second ref per image, named by its ID ("sha256:<config digest>"); removing the
  # tag leaves the old image's ID ref behind, and with it ~65 MB per `image` run. Drop ID refs whose
  # manifest no tag points at.
  [ "$mode" = replace ] || return 0
  local refs ref dg
  refs=$(ctrk images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}') || return 0
  while read -r ref dg; do
    case $ref in sha256:*) ;; *) continue ;; esac
    awk -v d="$dg" '$1 !~ /^sha256:/ && $2 == d {f = 1} END {exit !f}' <<< "$refs" ||
      ctrk images rm "$ref" >/dev/null 2>&1 || true
  done <<< "$refs"
}
import_images() {
  import_tar "$IMG/pause.tar" localhost/e2e/pause:1
  import_tar "$IMG/busybox.tar" localhost/e2e/busybox:1
  # The driver image of the last `image` (its tag in gpudra.ref); after `clean` the containerd root
  # is gone, and this puts it back.
  if [ -f "$IMG/gpudra.tar" ] && [ -f "$IMG/gpudra.ref" ]; then
    import_tar "$IMG/gpudra.tar" "$(cat "$IMG/gpudra.ref")"
  fi
}

image() {
  local tag=${1:-$IMAGE} t0=$SECONDS
  mkdir -p "$IMG"
  "$REPO/hack/build-image.sh" "$IMG/gpudra.tar" "$tag"
  echo "$tag" > "$IMG/gpudra.ref"
  if alive containerd; then
    import_tar "$IMG/gpudra.tar" "$tag" replace
    log "image $tag built and imported in $((SECONDS - t0))s (pods: imagePullPolicy Never or IfNotPresent)"
  else
    log "image $tag built in $((SECONDS - t0))s; containerd is not running: the next 'up' imports it"
  fi
}

# ---------------------------------------------------------------- up / down
# In-cluster clients (the driver's DaemonSet, anything using rest.InClusterConfig) dial
# KUBERNETES_SERVICE_HOST:PORT = $API_VIP:443, and there is no kube-proxy to translate that ClusterIP.
# Instead the host owns the address itself (on lo: this VM's kernel has no dummy interfaces) and the API
# server listens on 443 on all addresses; pods on the bridge reach it through their route for the service
# CIDR, host-network pods directly. No iptables, no ip_forward; the certificate's SANs include $API_VIP.
api_vip_up() {
  ip -4 addr show dev lo | grep -qF " $API_VIP/32 " || ip addr add "$API_VIP/32" dev lo
}
api_vip_down() {
  ip -4 addr show dev lo | grep -qF " $API_VIP/32 " && ip addr del "$API_VIP/32" dev lo || true
}

up() {
  local t0=$SECONDS ip name; build_all
  ip=$(node_ip); name=$(node_name)
  log "node $name, IP $ip, DIR $DIR"
  make_certs "$ip"; write_configs
  start_bg etcd /usr/bin/etcd --name local --data-dir "$RUN/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster local=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  wait_for 30 etcd curl -sf http://127.0.0.1:2379/health
  # The node IP must not be a loopback address: kubelet and the endpoints controller refuse it, and the
  # in-cluster "kubernetes" service would point at 127.0.0.1 of the pods' own network namespace.
  api_vip_up
  start_bg kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port="$API_PORT" --advertise-address="$ip" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key"
  wait_for 60 kube-apiserver kc get --raw /readyz
  start_bg kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KCFG" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key"
  start_bg kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KCFG" --bind-address=127.0.0.1 --leader-elect=false
  start_bg containerd "$BIN/containerd" --config "$RUN/containerd/config.toml"
  wait_for 30 containerd "$BIN/ctr" --address "$CSOCK" version
  import_images
  # kubelet rewrites vm.overcommit_memory, kernel.panic, kernel.panic_on_oops; the bridge plugin sets
  # ip_forward. Remember the values once so that `down` can put them back.
  local s
  [ -f "$RUN/sysctl.orig" ] || for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward; do
    echo "$s=$(sysctl -n "$s")"; done > "$RUN/sysctl.orig"
  local since=0
  alive kubelet || since=$(date +%s)
  start_bg kubelet "$BIN/kubelet" --config="$RUN/kubelet/config.yaml" --kubeconfig="$KCFG" \
    --hostname-override="$name" --node-ip="$ip" --v=2
  wait_for 90 "node $name to register" kc get node "$name"
  # After down + up the Node object still says Ready (from the old kubelet, and no controller manager
  # ran to mark it NotReady): wait for a Ready condition the new kubelet has written.
  wait_for 90 "node $name to be Ready" node_ready_since "$name" "$since"
  # Pods are refused until the service-account controller has created "default" in the namespace.
  wait_for 60 "default service account" kc get serviceaccount default
  log "cluster up in $((SECONDS - t0))s: export KUBECONFIG=$KCFG (or: eval \"\$($0 env)\")"
  kc get node -o wide
}

node_ready_since() {  # node_ready_since NODE EPOCH: Ready=True, with a heartbeat at or after EPOCH unless EPOCH is 0
  local c
  c=$(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}') || return 1
  [ "${c%% *}" = True ] || return 1
  [ "$2" = 0 ] || [ "$(date -d "${c#* }" +%s)" -ge "$2" ]
}

no_pods_left() { [ -z "$(kc get pods -A -o name 2>/dev/null)" ] && [ -z "$(ctrk tasks ls -q 2>/dev/null)" ]; }

down() {
  if alive kube-apiserver && alive kubelet; then  # let kubelet tear pods down (CNI DEL, unmounts, unprepare)
    # The controller manager would recreate DaemonSet/ReplicaSet pods while we wait for them to go.
    stop_pid kube-controller-manager
    # Pods with ResourceClaims first, while the DRA driver's pod still runs: without the driver,
    # kubelet cannot unprepare their claims and they stay Terminating ("DRA driver ... is not registered").
    local claimpods ns pod i
    claimpods=$(kc get pods -A -o jsonpath='{range .items[?(@.spec.resourceClaims)]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}' 2>/dev/null || true)
    if [ -n "$claimpods" ]; then
      while read -r ns pod; do
        kc -n "$ns" delete pod "$pod" --grace-period=1 --wait=false >/dev/null 2>&1 || true
      done <<< "$claimpods"
      for ((i = 0; i < 60; i++)); do
        [ -z "$(kc get pods -A -o jsonpath='{range .items[?(@.spec.resourceClaims)]}{.metadata.name}{end}' 2>/dev/null)" ] && break
        sleep 0.5
      done
    fi
    kc delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1 || true
    for ((i = 0; i < 60; i++)); do no_pods_left && break; sleep 0.5; done
  fi
  stop_pid kubelet
  if alive containerd; then  # leftovers (should be none)
    local id
    for id in $(ctrk tasks ls -q 2>/dev/null); do
      ctrk tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; ctrk tasks rm -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  local p exe
  for p in /proc/[0-9]*; do  # shims outlive containerd by design; stop only ours (matched by binary path)
    exe=$(readlink "$p/exe" 2>/dev/null || true)
    [ "$exe" = "$BIN/containerd-shim-runc-v2" ] && { kill -KILL "${p#/proc/}" 2>/dev/null || true; log "killed shim ${p#/proc/}"; }
  done
  local c
  # The API server drains its watch caches for ~10s after SIGTERM; its state is in etcd, so 3s is plenty.
  for c in kube-scheduler kube-controller-manager kube-apiserver; do stop_pid "$c" 3; done
  stop_pid etcd
  local m  # pod volumes, netns, shm, rootfs mounts; kubelet also bind-mounts /var/lib/kubelet onto itself (rshared)
  for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($RUN|/var/lib/kubelet)(/|$)" | sort -r || true); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" || true
  api_vip_down
  if [ -f "$RUN/sysctl.orig" ]; then
    local k v
    while IFS='=' read -r k v; do sysctl -qw "$k=$v" || true; done < "$RUN/sysctl.orig"
    rm -f "$RUN/sysctl.orig"
  fi
  local cg
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  log "down"
}

clean() {
  down
  rm -rf "$RUN" /var/lib/kubelet /var/log/pods /var/log/containers /run/containerd/runc/k8s.io
  # The driver's CDI specs (per claim, driver-wide, static devices, the device plugin's), their
  # staging directory and its host state (chart default hostStateDir: the copied nvidia-cdi-hook,
  # the mock driver root): stale once /var/lib/kubelet (with its checkpoint) is gone.
  rm -rf /var/run/cdi/k8s.*-claim_*.json /var/run/cdi/k8s.*-driver.json /var/run/cdi/k8s.*-device.json \
    /var/run/cdi/k8s.device-plugin.nvidia.com-gpu.json /var/run/cdi/.k8s.*.staging /var/lib/gpudra
  rmdir /run/containerd/s /run/containerd/runc /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  log "cleaned $RUN (kept $DIR/cache, $DIR/bin and $DIR/images)"
}

status() {
  local c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet; do
    if alive "$c"; then echo "$c running (pid $(cat "$PIDS/$c.pid"))"; else echo "$c not running"; fi
  done
  if alive kube-apiserver; then kc get nodes -o wide || true; fi
  if alive containerd; then echo "images:"; ctrk images ls -q 2>/dev/null | awk '!/^sha256:/ {print "  " $0}' || true; fi
}

case "$CMD" in
  build) build_all ;;
  up) up ;;
  image) image "${2:-}" ;;
  restart-kubelet) stop_pid kubelet; up ;;
  down) down ;;
  clean) clean ;;
  status) status ;;
  env) echo "export KUBECONFIG=$KCFG PATH=$BIN:\$PATH CONTAINERD_ADDRESS=$CSOCK CONTAINERD_NAMESPACE=k8s.io"
       echo "export CONTAINERD_CONFIG=$RUN/containerd/config.toml" ;;
  help|-h|--help) sed -n '2,40p' "$0" ;;
  *) sed -n '2,40p' "$0" >&2; exit 2 ;;
esac
