#!/usr/bin/env bash
# demo.sh — the project's main job: a real single-node cluster with mock GPUs,
# the driver installed by its Helm chart, and the demo workloads getting their
# GPUs. Prints each demo pod's view of its GPUs.
#
# Usage: hack/demo.sh [up|install|run|all]   (default: all = up + install + run)
#   up       start the local cluster (builds what is missing) and import the driver image
#   install  helm upgrade --install the chart in mock mode and wait for the plugin
#   run      run the demos in three waves (the mock machine has 8 GPUs) and NVIDIA's quickstart pods,
#            print each pod's GPU view (its device nodes, driver libraries and `nvidia-smi -L`)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CLUSTER=$HERE/local-cluster.sh
NAMESPACE=${GPUDRA_NAMESPACE:-gpudra-system}
RELEASE=${GPUDRA_RELEASE:-gpudra}
MOCK_MACHINE=${GPUDRA_MOCK_MACHINE:-dgxh100}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cluster_env() { eval "$("$CLUSTER" env)"; }

up() {
  "$CLUSTER" up
  "$CLUSTER" image
}

install() {
  cluster_env
  log "installing the chart (mock $MOCK_MACHINE, with the doctor init container)"
  # The doctor reads the node's runtime config; this cluster's containerd keeps
  # its config in the cluster directory, not in /etc/containerd.
  local containerd_config
  containerd_config=$("$CLUSTER" env | sed -n 's/^export CONTAINERD_CONFIG=//p')
  # shellcheck disable=SC2086  # GPUDRA_HELM_ARGS: extra helm arguments, split on spaces
  helm upgrade --install "$RELEASE" "$REPO/deployments/helm/gpudra" --namespace "$NAMESPACE" --create-namespace \
    --set mock.enabled=true --set mock.machine="$MOCK_MACHINE" --set image.pullPolicy=Never \
    --set doctor.enabled=true ${containerd_config:+--set-json "doctor.extraArgs=[\"--containerd-config=$containerd_config\"]"} \
    ${GPUDRA_HELM_ARGS:-} --wait --timeout 3m
  kubectl -n "$NAMESPACE" rollout status daemonset -l app.kubernetes.io/instance="$RELEASE" --timeout=2m
  for _ in $(seq 1 60); do
    n=$(kubectl get resourceslices -o jsonpath='{range .items[*]}{.spec.devices[*].name}{" "}{end}' | wc -w)
    [ "$n" -gt 0 ] && break; sleep 1
  done
  log "published devices:"
  kubectl get resourceslices -o custom-columns='SLICE:.metadata.name,NODE:.spec.nodeName,DRIVER:.spec.driver,DEVICES:.spec.devices[*].name'
}

# container_view NS POD CONTAINER: what the container printed between its view
# markers (GPU-VIEW-*, MPS-VIEW-*), or its whole log when it has none (the
# quickstart pods print only `nvidia-smi -L`). Waits up to 30s for the view
# to be complete.
container_view() {
  local logs
  for _ in $(seq 1 30); do
    logs=$(kubectl -n "$1" logs "$2" -c "$3")
    if grep -q -- '-VIEW-BEGIN' <<<"$logs"; then
      grep -q -- '-VIEW-END' <<<"$logs" && break
    elif [ -n "$logs" ]; then
      break
    fi
    sleep 1
  done
  if grep -q -- '-VIEW-BEGIN' <<<"$logs"; then
    sed -n '/GPU-VIEW-BEGIN/,/GPU-VIEW-END/p;/MPS-VIEW-BEGIN/,/MPS-VIEW-END/p' <<<"$logs" | grep -v -- '-VIEW-'
  else
    printf '%s\n' "$logs"
  fi
}

show_wave() {
  local wave=$1
  kubectl wait pods -A -l gpudra.demo/wave="$wave" --for=condition=Ready --timeout=3m >/dev/null
  kubectl get pods -A -l gpudra.demo/wave="$wave" -o wide
  local ns pod c
  while read -r ns pod; do
    for c in $(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.spec.containers[*].name}'); do
      echo "=== $ns/$pod [$c]"
      container_view "$ns" "$pod" "$c"
    done
  done < <(kubectl get pods -A -l gpudra.demo/wave="$wave" -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')
}

run() {
  cluster_env
  kubectl apply -f "$REPO/demo/00-namespace.yaml" >/dev/null
  log "wave 1: single GPU, two GPUs, one claim for two containers, one claim for two pods"
  for f in 01 02 03 04; do kubectl apply -f "$REPO"/demo/$f-*.yaml >/dev/null; done
  show_wave 1
  kubectl delete pods -A -l gpudra.demo/wave=1 --wait >/dev/null
  kubectl -n gpudra-demo delete resourceclaim shared-gpu --ignore-not-found --wait >/dev/null
  log "wave 2: selection by product, memory, compute capability; time-slicing config; admin access"
  for f in 05 06 07 08 09; do kubectl apply -f "$REPO"/demo/$f-*.yaml >/dev/null; done
  show_wave 2
  kubectl delete pods -A -l gpudra.demo/wave=2 --wait >/dev/null
  log "wave 3: a time-sliced GPU shared by two pods; two containers sharing a GPU through an MPS daemon"
  for f in 11 13; do kubectl apply -f "$REPO"/demo/$f-*.yaml >/dev/null; done
  show_wave 3
  kubectl -n "$NAMESPACE" get pods -l app.kubernetes.io/component=mps-control-daemon -o wide 2>/dev/null || true
  log "quickstart: NVIDIA's quickstart pods, unchanged but for the image, list their GPUs with nvidia-smi -L"
  kubectl apply -f "$REPO"/demo/14-quickstart.yaml >/dev/null
  show_wave quickstart
  log "demo pods of wave 3 and the quickstart keep running; remove them with: kubectl delete ns gpudra-demo gpudra-demo-admin"
  log "MIG (demo/12-mig.yaml) needs a MIG mock machine: GPUDRA_MOCK_MACHINE=dgxh100-mig hack/demo.sh install"
  log "dynamic MIG (demo/15-dynamic-mig.yaml, demo/16-first-available.yaml) needs dynamicMIG.enabled: GPUDRA_HELM_ARGS=\"--set dynamicMIG.enabled=true\" hack/demo.sh install, then kubectl apply -f demo/00-namespace.yaml -f demo/15-dynamic-mig.yaml (or 16)"
  log "GPU shares (demo/17-gpu-shares.yaml, demo/18-compute-shares.yaml) need consumableCapacity: GPUDRA_HELM_ARGS=\"--set consumableCapacity=memory\" hack/demo.sh install (4 for 18), then kubectl apply -f demo/00-namespace.yaml -f demo/17-gpu-shares.yaml"
}

case ${1:-all} in
  up) up ;;
  install) install ;;
  run) run ;;
  all) up; install; run ;;
  *) echo "usage: $0 [up|install|run|all]" >&2; exit 2 ;;
esac
