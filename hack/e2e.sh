#!/usr/bin/env bash
# e2e.sh — end-to-end tests on the real local cluster: brings the cluster up
# (building what is missing), installs the chart in mock mode, then runs the
# Go e2e tests of test/e2e against it. The cluster stays up; `make cluster-down`
# (or .ci/run's trap) stops it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
"$HERE/demo.sh" up
eval "$("$HERE/local-cluster.sh" env)"

# On failure, leave what is needed to understand it in the CI log.
diagnose() {
  local rc=$?
  [ "$rc" -eq 0 ] && return
  echo "=== e2e failed (exit $rc): cluster state" >&2
  kubectl get pods -A -o wide >&2 || true
  kubectl get resourceclaims -A >&2 || true
  kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -40 >&2 || true
  kubectl -n gpudra-system logs -l app.kubernetes.io/instance=gpudra --all-containers --tail=80 >&2 || true
  ls -l /var/run/cdi >&2 || true
  # Exclusive claims have no spec there: their records are the checkpoint's.
  ls -l /var/lib/kubelet/plugins/gpu.nvidia.com/claims >&2 || true
}
# The real NVML phase's fake driver root is a mount point of its own (see there).
REAL_NVML_DIR=/var/lib/gpudra/realnvml
# The mock machine's MIG state (the chart's hostStateDir, mock/).
MIG_STATE=/var/lib/gpudra/mock/mig-state.json
unmount_real_nvml() { if mountpoint -q "$REAL_NVML_DIR/root"; then umount -l "$REAL_NVML_DIR/root" || true; fi; }
trap 'diagnose; unmount_real_nvml' EXIT
# helm exists once the cluster is built: lint the chart before installing it.
helm lint --strict "$REPO/deployments/helm/gpudra"
helm lint --strict "$REPO/deployments/helm/gpudra" --set mock.enabled=true
# Unhealthy GPUs recover after 20s without errors, so that the health test
# sees the taint go.
# No mock GPU in MIG mode left over by an aborted run (see the dynamic MIG phase).
rm -f "$MIG_STATE"
GPUDRA_HELM_ARGS="--set health.recoveryPeriod=20s" "$HERE/demo.sh" install
helm test gpudra --namespace gpudra-system --logs --timeout 3m
cd "$REPO"
go test -tags e2e -count=1 -v -timeout 20m ./test/e2e/

# GPU shares (consumable capacity): by memory with MPS (demo 17), by 4
# compute shares with MPS (demo 18), and the same without MPS (accounting
# only); then back to whole GPUs. The phases' tests delete their pods and
# wait until no MPS daemon of a shared GPU is left. Partitionable GPUs are
# never shared, so this runs apart from the dynamic MIG phase.
plugin_rolled_out() { kubectl -n gpudra-system rollout status daemonset -l app.kubernetes.io/instance=gpudra --timeout=2m; }
shares_phase() { # <GPUDRA_E2E_MODE> <test> <helm --set args...>
  local mode=$1 test=$2; shift 2
  helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values "$@" --wait --timeout 3m
  plugin_rolled_out
  GPUDRA_E2E_MODE=$mode go test -tags e2e -count=1 -v -timeout 10m -run "^$test\$" ./test/e2e/
}
shares_phase shares TestGPUSharesByMemory --set consumableCapacity=memory
shares_phase shares-4 TestGPUComputeShares --set consumableCapacity=4
shares_phase shares-unenforced TestGPUSharesNotEnforced --set mps.enabled=false
# Device metadata (KEP-5304, off by default): whole GPUs again, the metadata
# files on; then off.
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set consumableCapacity=disabled \
  --set mps.enabled=true --set deviceMetadata.enabled=true --wait --timeout 3m
plugin_rolled_out
GPUDRA_E2E_DEVICE_METADATA=1 go test -tags e2e -count=1 -v -timeout 5m -run '^TestDeviceMetadata$' ./test/e2e/
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set deviceMetadata.enabled=false --wait --timeout 3m
plugin_rolled_out

# Static MIG: the same node as a DGX H100 whose GPUs 0 and 1 are in MIG mode.
# With one DeviceClass per MIG profile (extendedResourceName nvidia.com/mig-<profile>),
# a pod written for the device plugin's mixed strategy runs under DRA (demo 21).
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mock.machine=dgxh100-mig \
  --set deviceClasses.migProfiles.enabled=true --wait --timeout 3m
GPUDRA_E2E_MODE=mig GPUDRA_E2E_MIG_PROFILES=1 go test -tags e2e -count=1 -v -timeout 10m -run MIG ./test/e2e/

# Dynamic MIG: back to the plain DGX H100, with dynamicMIG.enabled: every GPU
# partitionable, MIG devices made on prepare and destroyed on unprepare. The
# mock machine keeps its MIG state in hostStateDir's mock/mig-state.json
# whatever the mode; the static MIG plugin above never writes it, so removing
# it first starts the phase with no GPU in MIG mode whatever an earlier run left.
rm -f "$MIG_STATE"
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mock.machine=dgxh100 \
  --set deviceClasses.migProfiles.enabled=false --set dynamicMIG.enabled=true --wait --timeout 3m
GPUDRA_E2E_MODE=dynamic-mig go test -tags e2e -count=1 -v -timeout 15m -run DynamicMIG ./test/e2e/
# The test deleted its pods and claims; their MIG devices are destroyed and a
# GPU leaves MIG mode with its last one. Should one be left in MIG mode all
# the same (a failed unprepare), the state file goes and the plugin restarts
# afresh, so that the phases below see whole GPUs.
mig_gpus='[.gpus[] | select(.migMode != 0 or .pendingMigMode != 0 or ((.gpuInstances // []) | length) > 0)]'
mig_left() { [ -f "$MIG_STATE" ] && jq -e "$mig_gpus | length > 0" "$MIG_STATE" >/dev/null; }
for _ in $(seq 1 30); do mig_left || break; sleep 1; done
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set dynamicMIG.enabled=false --wait --timeout 3m
if mig_left; then
  echo "e2e: GPUs left in MIG mode after the dynamic MIG phase: $(jq -c "$mig_gpus" "$MIG_STATE")" >&2
  rm -f "$MIG_STATE"
  kubectl -n gpudra-system delete pod -l app.kubernetes.io/component=kubelet-plugin --wait=true --timeout=2m
  kubectl -n gpudra-system rollout status daemonset -l app.kubernetes.io/instance=gpudra --timeout=2m
fi

# The same cluster without DRA in the way: the chart in device-plugin mode
# (what mode=auto picks on clusters that do not serve resource.k8s.io/v1),
# then back to DRA, so a release never runs both.
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mode=device-plugin --wait --timeout 3m
GPUDRA_E2E_MODE=device-plugin go test -tags e2e -count=1 -v -timeout 10m -run 'DevicePlugin|^TestFeatureLabels$' ./test/e2e/
# The config file: the test creates the ConfigMap (time-slicing 2 and 4, MPS 2,
# an unusable one) and switches configs by the node label, without restarts.
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values \
  --set devicePlugin.config.name=gpudra-e2e-dp-config --set devicePlugin.config.default=ts2 --wait --timeout 3m
plugin_rolled_out
GPUDRA_E2E_MODE=device-plugin-config go test -tags e2e -count=1 -v -timeout 10m -run '^TestDevicePluginConfigFile$' ./test/e2e/
# The mixed MIG strategy: the MIG mock machine, nvidia.com/mig-<profile> resources (demo 20).
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values \
  --set devicePlugin.config.name= --set devicePlugin.config.default= --set mock.machine=dgxh100-mig \
  --set devicePlugin.migStrategy=mixed --wait --timeout 3m
plugin_rolled_out
GPUDRA_E2E_MODE=device-plugin-mixed go test -tags e2e -count=1 -v -timeout 10m -run '^TestDevicePluginMIGMixed$' ./test/e2e/
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mode=dra \
  --set mock.machine=dgxh100 --set devicePlugin.migStrategy=none --wait --timeout 3m

# Without mock mode (mock.enabled=false, NVML_BACKEND=real): nvidiaDriverRoot is
# a fake driver root (test/e2e/fakedriverroot: the mock machine's driver files
# and device nodes) whose libnvidia-ml.so.1 is the mock NVML library of
# test/mocknvml, configured through the chart's extraEnv (machine, a seed of
# its own so that its UUIDs differ from the mock backend's, and an event file
# in hostStateDir, which the plugin mounts read-write). The plugin, the doctor
# and `gpudra cdi generate` see the GPUs only through the NVML C interface.
# The chart mounts nvidiaDriverRoot with propagation HostToContainer, which needs
# a shared or slave mount on the host (as the GPU Operator's /run/nvidia/driver
# is); this host's / is private, so the fake root is bind-mounted on itself
# and made shared (unmounted when this script exits). The uninstall below
# leaves the cluster in mock mode again (demo.sh install).
REAL_NVML_SEED=e2e-realnvml
CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -Wno-deprecated-declarations" make -C "$REPO" --no-print-directory mocknvml
rm -f "$REAL_NVML_DIR/inject-events"
go run ./test/e2e/fakedriverroot -root "$REAL_NVML_DIR/root" -lib bin/mocknvml/libnvidia-ml.so.1 -machine dgxh100 -seed "$REAL_NVML_SEED"
mountpoint -q "$REAL_NVML_DIR/root" || mount --bind "$REAL_NVML_DIR/root" "$REAL_NVML_DIR/root"
mount --make-shared "$REAL_NVML_DIR/root"
real_nvml_env=$(printf '[{"name":"GPUDRA_MOCK_NVML_MACHINE","value":"dgxh100"},{"name":"GPUDRA_MOCK_NVML_SEED","value":"%s"},{"name":"GPUDRA_MOCK_NVML_EVENTS_FILE","value":"%s"},{"name":"GPUDRA_MOCK_NVML_EVENTS_POLL","value":"200ms"}]' \
  "$REAL_NVML_SEED" "$REAL_NVML_DIR/inject-events")
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mock.enabled=false \
  --set nvidiaDriverRoot="$REAL_NVML_DIR/root" --set-json "extraEnv=$real_nvml_env" --wait --timeout 3m
GPUDRA_E2E_MODE=realnvml GPUDRA_E2E_DRIVER_ROOT="$REAL_NVML_DIR/root" GPUDRA_E2E_NVML_SEED="$REAL_NVML_SEED" \
  GPUDRA_E2E_NVML_EVENTS_FILE="$REAL_NVML_DIR/inject-events" go test -tags e2e -count=1 -v -timeout 10m -run RealNVML ./test/e2e/

# Uninstall: the cleanup hook removes the driver's slices; then install again,
# so that the cluster is left with the driver running.
helm uninstall gpudra --namespace gpudra-system --wait --timeout 5m
GPUDRA_E2E_MODE=uninstalled go test -tags e2e -count=1 -v -timeout 5m -run Uninstall ./test/e2e/
"$HERE/demo.sh" install
