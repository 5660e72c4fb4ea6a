#!/usr/bin/env bash
# gpu-check.sh — checks gpudra against the real NVIDIA driver of this machine, in
# under 5 minutes: the inventory (against nvidia-smi and the device nodes), the host
# CDI spec (`gpudra cdi generate`, loaded back by the CDI library as a container
# runtime does), `gpudra doctor`, and the health monitor's NVML event loop. Run it on
# a GPU node before a release and after a driver upgrade; the mock machines of the
# other tests cannot find what a real driver does differently.
#
# Usage: hack/gpu-check.sh   (make gpu-check; root, for the doctor to read the runtime configs)
# Exit:  0 every check passed, 1 a check failed, 2 no NVIDIA driver here (nothing checked)
#
# Environment:
#   GPU_CHECK_BIN            a directory with prebuilt `gpudra` and `gpu.test` (go build ./cmd/gpudra;
#                            go test -c -tags gpu -o gpu.test ./test/gpu/) for a node without Go;
#                            default: build both (Go with cgo) into a temporary directory
#   NVIDIA_DRIVER_ROOT       where the driver is installed (default /; /run/nvidia/driver for the
#                            GPU operator's driver container)
#   NVIDIA_SMI               the nvidia-smi to compare with (default: nvidia-smi on PATH)
#   GPU_CHECK_HEALTH_SECONDS how long the health event loop runs (default 10)
#   GPU_CHECK_DOCTOR_ARGS    extra `gpudra doctor` arguments, e.g. --containerd-config=PATH
#   GPU_CHECK_NVML, MOCK_HOST_ROOT, NODE_NAME
#                            rehearse the script without a GPU: a mock machine (mock:dgxh100) and the
#                            mock host its kubelet plugin laid out (the chart's /var/lib/gpudra/mock),
#                            whose nvidia-smi is the mock one
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NVML=${GPU_CHECK_NVML:-real}
DRIVER_ROOT=${NVIDIA_DRIVER_ROOT:-/}
HEALTH_SECONDS=${GPU_CHECK_HEALTH_SECONDS:-10}
passed=0 failed=0

say() { printf 'gpu-check: %s\n' "$*"; }
# first LINES: the first line (no `| head -1`: with pipefail, a writer killed by
# SIGPIPE would fail the script).
first() { printf '%s\n' "${1%%$'\n'*}"; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The node's flags, the same for every gpudra command and the Go checks.
node_args=(--nvml="$NVML" --driver-root="$DRIVER_ROOT")
export GPU_CHECK_NVML=$NVML GPU_CHECK_DRIVER_ROOT=$DRIVER_ROOT GPU_CHECK_HEALTH_SECONDS=$HEALTH_SECONDS
if [ "$NVML" != real ]; then
  : "${MOCK_HOST_ROOT:?a mock machine needs MOCK_HOST_ROOT, the mock host its kubelet plugin laid out}"
  node_args=(--nvml="$NVML" --mock-host-root="$MOCK_HOST_ROOT")
  NVIDIA_SMI=${NVIDIA_SMI:-$MOCK_HOST_ROOT/usr/bin/nvidia-smi}
  export GPU_CHECK_DRIVER_ROOT=$MOCK_HOST_ROOT GPU_CHECK_DEV_ROOT=$MOCK_HOST_ROOT GPUDRA_MOCK_DEV_ROOT=$MOCK_HOST_ROOT
  say "REHEARSAL on mock machine $NVML (mock host $MOCK_HOST_ROOT): this checks the script, not a driver"
fi
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
export NVIDIA_SMI

# No driver: nothing to check.
if ! command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
  say "no NVIDIA driver on this machine ($NVIDIA_SMI not found): nothing checked; run it on a GPU node"
  exit 2
fi
if ! smi_list=$("$NVIDIA_SMI" -L 2>&1) || ! grep -q '^GPU [0-9]' <<<"$smi_list"; then
  say "no usable NVIDIA driver or GPU on this machine ($NVIDIA_SMI -L: $(first "$smi_list")): nothing checked"
  exit 2
fi
say "driver $(first "$("$NVIDIA_SMI" --query-gpu=driver_version --format=csv,noheader)"), GPUs:"
sed 's/^/  /' <<<"$smi_list"

# check NAME COMMAND...: runs the command, prints PASS or FAIL (with the end of its output).
check() {
  local name=$1; shift
  local log="$WORK/log.$((passed + failed))" start=$SECONDS
  say "checking $name: $*"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    say "PASS $name ($((SECONDS - start))s)"
  else
    local rc=$?
    failed=$((failed + 1))
    say "FAIL $name ($((SECONDS - start))s, exit $rc); its output ends with:"
    tail -n 40 "$log" | sed 's/^/  | /'
  fi
}

summary() {
  say "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# The binaries.
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  GPUDRA=$GPU_CHECK_BIN/gpudra GPU_TEST=$GPU_CHECK_BIN/gpu.test
  for b in "$GPUDRA" "$GPU_TEST"; do
    [ -x "$b" ] || { say "GPU_CHECK_BIN: $b is missing or not executable"; exit 1; }
  done
else
  GPUDRA=$WORK/gpudra GPU_TEST=$WORK/gpu.test
  check "build" bash -c "cd '$REPO' && go build -o '$GPUDRA' ./cmd/gpudra && go test -c -tags gpu -o '$GPU_TEST' ./test/gpu/"
  if [ "$failed" -gt 0 ]; then summary || exit 1; fi
fi

# The doctor: NVML, driver files and device nodes, the runtime's CDI support.
# shellcheck disable=SC2086  # GPU_CHECK_DOCTOR_ARGS: extra arguments, split on spaces
check "doctor" timeout 60 "$GPUDRA" doctor "${node_args[@]}" ${GPU_CHECK_DOCTOR_ARGS:-}

# The host spec, loaded back with the CDI library: by index, by UUID and all.
mkdir -p "$WORK/cdi"
check "cdi generate" timeout 60 "$GPUDRA" cdi generate "${node_args[@]}" --output "$WORK/cdi/nvidia.yaml"
uuid0=$(first "$("$NVIDIA_SMI" --query-gpu=uuid --format=csv,noheader)")
for device in nvidia.com/gpu=0 "nvidia.com/gpu=$uuid0" nvidia.com/gpu=all; do
  check "cdi list resolves $device" timeout 30 "$GPUDRA" cdi list --cdi-dirs "$WORK/cdi" --device "$device"
done
check "cdi list: no spec errors" bash -c "! timeout 30 '$GPUDRA' cdi list --cdi-dirs '$WORK/cdi' | grep -A20 '^ERRORS'"

# Real inventory and the health event loop (test/gpu).
check "inventory matches nvidia-smi" timeout 60 "$GPU_TEST" -test.v -test.count=1 -test.run '^(TestInventoryMatchesNvidiaSMI|TestMIGDevicesMatchNvidiaSMI)$'
check "device nodes match the minors" timeout 60 "$GPU_TEST" -test.v -test.count=1 -test.run '^TestDeviceNodesMatchTheMinors$'
check "health event loop for ${HEALTH_SECONDS}s" timeout $((HEALTH_SECONDS + 60)) "$GPU_TEST" -test.v -test.count=1 -test.run '^TestHealthEventLoop$'

summary
