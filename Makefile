# gpudra — build, test and lint entry points. `make help` lists them.

GO        ?= go
BIN_DIR   ?= bin
# Every directory under cmd/ that holds Go files, as the image has them
# (Dockerfile, hack/build-image.sh).
BINARIES  := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard cmd/*/*.go)))))
# Race detector on for every test run.
TEST_FLAGS ?= -race -count=1
FUZZ_TIME ?= 5m

.PHONY: all build test lint fmt vet fuzz bench clean help demo e2e cluster-up cluster-down image bench-dra gpu-check mocknvml

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: mocknvml ## build the binaries into bin/ (and the mock NVML library)
	@mkdir -p $(BIN_DIR)
	$(foreach b,$(BINARIES),$(GO) build -o $(BIN_DIR)/$(b) ./cmd/$(b) &&) true

# The mock libnvidia-ml.so.1 for tests and test images (test/mocknvml); no
# production image ships it.
MOCKNVML := $(BIN_DIR)/mocknvml/libnvidia-ml.so.1

mocknvml: ## build the mock NVML library into bin/mocknvml/libnvidia-ml.so.1
	@mkdir -p $(dir $(MOCKNVML))
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -o $(MOCKNVML) ./test/mocknvml
	@rm -f $(BIN_DIR)/mocknvml/libnvidia-ml.so.h

test: ## unit and integration tests, race detector on
	$(GO) test $(TEST_FLAGS) ./...

lint: fmt vet ## gofmt and go vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fuzz: ## run each fuzz target for FUZZ_TIME (default 5m; CI: 20s)
	$(GO) test ./pkg/opaqueconfig/ -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZ_TIME)
	$(GO) test ./pkg/checkpoint/ -run '^$$' -fuzz FuzzDecodeRecord -fuzztime $(FUZZ_TIME)

bench: ## Go benchmarks of the hot paths
	$(GO) test ./... -run '^$$' -bench . -benchmem

demo: ## main job: local cluster with mock GPUs, the chart installed, demo pods and their GPU view
	hack/demo.sh all

e2e: ## end-to-end tests on the local cluster (cluster stays up: make cluster-down)
	hack/e2e.sh

gpu-check: ## on a GPU node: inventory, cdi generate, doctor, health events vs the real driver (exit 2 without one)
	hack/gpu-check.sh

cluster-up: ## start the local cluster (builds what is missing)
	hack/local-cluster.sh up

image: ## build the driver image and import it into the local cluster
	hack/local-cluster.sh image

cluster-down: ## stop the local cluster
	hack/local-cluster.sh down

clean:
	rm -rf $(BIN_DIR)

bench-dra: ## kubelet-side DRA prepare/unprepare benchmark against the running plugin (root, local cluster up, chart installed)
	$(GO) run ./cmd/gpudra-bench --claims 8 --concurrency 1,8 --rounds 30 --repeat 5

.PHONY: bench-schedule
bench-schedule: ## scheduling at cluster scale: 100 and 500 simulated nodes (no kubelets), DRA vs nvidia.com/gpu, through the cluster's kube-scheduler (KUBECONFIG of a running cluster, chart installed)
	$(GO) run ./cmd/gpudra-bench --simulate-nodes 100,500 --simulate-pods 500
