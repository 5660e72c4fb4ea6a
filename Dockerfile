# gpudra driver image, for machines with a Docker (BuildKit) or Podman engine:
#   docker build -t gpudra/gpudra:dev .
# Without an engine, hack/build-image.sh builds the same layout as an OCI archive.
#
# The binaries use cgo (go-nvml dlopens libnvidia-ml.so.1 at run time), so they link against the
# builder's glibc: builder and runtime are both Debian bookworm. (golang:1.26 alone is Debian trixie,
# whose newer glibc symbols bookworm-slim lacks.)
ARG GOLANG_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GOLANG_IMAGE} AS build
# The golang images ship gcc and libc6-dev.
ENV CGO_ENABLED=1 \
    CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" \
    GOFLAGS=-buildvcs=false
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Every command under cmd/, and nvidia-cdi-hook at the version go.mod pins (hack/tools/tools.go),
# stamped with that version like the toolkit's own Makefile does.
RUN set -eu; mkdir -p /out; \
    for d in cmd/*/; do \
      n=$(basename "$d"); go build -trimpath -ldflags "-s -w" -o "/out/$n" "./cmd/$n"; \
    done; \
    v=$(go list -m -f '{{.Version}}' github.com/NVIDIA/nvidia-container-toolkit); \
    go build -trimpath -o /out/nvidia-cdi-hook \
      -ldflags "-s -w -X github.com/NVIDIA/nvidia-container-toolkit/internal/info.version=${v#v}" \
      github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-cdi-hook

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="gpudra" \
      org.opencontainers.image.description="Kubernetes DRA driver for NVIDIA GPUs"
COPY --from=build /out/ /usr/bin/
ENTRYPOINT ["/usr/bin/gpu-kubelet-plugin"]
