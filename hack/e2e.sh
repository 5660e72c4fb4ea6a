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
