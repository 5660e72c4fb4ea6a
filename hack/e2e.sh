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
# helm exists once the cluster is built: lint the chart before installing it.
helm lint --strict "$REPO/deployments/helm/gpudra"
helm lint --strict "$REPO/deployments/helm/gpudra" --set mock.enabled=true
"$HERE/demo.sh" install
cd "$REPO"
go test -tags e2e -count=1 -v -timeout 20m ./test/e2e/

# The same cluster without DRA in the way: the chart in device-plugin mode
# (what mode=auto picks on clusters that do not serve resource.k8s.io/v1),
# then back to DRA, so a release never runs both.
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mode=device-plugin --wait --timeout 3m
GPUDRA_E2E_MODE=device-plugin go test -tags e2e -count=1 -v -timeout 10m -run DevicePlugin ./test/e2e/
helm upgrade gpudra "$REPO/deployments/helm/gpudra" --namespace gpudra-system --reuse-values --set mode=dra --wait --timeout 3m
