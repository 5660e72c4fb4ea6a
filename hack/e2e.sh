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
}
trap diagnose EXIT
# helm exists once the cluster is built: lint the chart before installing it.
helm lint --strict "$REPO/deployments/helm/gpudra"
helm lint --strict "$REPO/deployments/helm/gpudra" --set mock.enabled=true
# Unhealthy GPUs recover after 20s without errors, so that the health test
# sees the taint go.
GPUDRA_HELM_ARGS="--set health.recoveryPeriod=20s" "$HERE/demo.sh" install
cd "$REPO"
go test -tags e2e -count=1 -v -timeout 20m ./test/e2e/

# Static MIG: the same node as a DGX H100 whose GPUs 0 and 1 are in MIG mode.
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mock.machine=dgxh100-mig --wait --timeout 3m
GPUDRA_E2E_MODE=mig go test -tags e2e -count=1 -v -timeout 10m -run MIG ./test/e2e/
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mock.machine=dgxh100 --wait --timeout 3m

# The same cluster without DRA in the way: the chart in device-plugin mode
# (what mode=auto picks on clusters that do not serve resource.k8s.io/v1),
# then back to DRA, so a release never runs both.
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mode=device-plugin --wait --timeout 3m
GPUDRA_E2E_MODE=device-plugin go test -tags e2e -count=1 -v -timeout 10m -run DevicePlugin ./test/e2e/
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mode=dra --wait --timeout 3m

# Uninstall: the cleanup hook removes the driver's slices; then install again,
# so that the cluster is left with the driver running.
helm uninstall gpudra --namespace gpudra-system --wait --timeout 5m
GPUDRA_E2E_MODE=uninstalled go test -tags e2e -count=1 -v -timeout 5m -run Uninstall ./test/e2e/
"$HERE/demo.sh" install
