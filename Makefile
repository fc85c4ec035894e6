# carve — see README.md. Every target runs without Docker.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/carve-csi/carve/pkg/buildinfo.Version=$(VERSION)
GO ?= go
# Tests use real servers (nfs-ganesha, glusterd) and real mounts: run as root
# after `make deps`. CARVE_REQUIRE_REAL=1 turns "skipped: not available" into failures.
TEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: all build test lint unit sanity fuzz tools images image-check e2e conformance conformance-full bench demo deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

## test: lint, then every unit and integration test (the README's test command).
test: lint unit

# The example's replica-set agent is its own module, so its driver stays out of carve's binaries.
AGENT := examples/mongo-statefulset/agent
# FerretDB (a Mongo-wire server) is heavy; its data-survival test is a module of its own too.
FERRET := test/ferret
# carve's own kubelet-registration, liveness-probe and resizer sidecars (build/sidecars)
# and the image assembler with its image test (hack/tools/images): modules of
# their own, so carve's go.mod does not grow k8s.io/kubelet or go-containerregistry.
SIDECARS := build/sidecars
IMAGETOOLS := hack/tools/images
IMAGES_DIR ?= $(CURDIR)/bin/images

# Packages with goroutines of their own (purges, informers, gRPC servers,
# share locks) run under the race detector; the others run plainly.
RACE_PKGS := ./pkg/adopt/... ./pkg/volume/... ./pkg/dirvol/... ./pkg/provisioner/... ./pkg/csidriver ./pkg/sharemount/... ./pkg/nfs/... ./pkg/httpserve/...

# tools first: test/chart renders charts/carve with helm, compares it with
# deploy/ through kubectl kustomize and dry-runs both on a real kube-apiserver
# (cached; a cold build adds 10-25 minutes once, see README "Set up").
unit: tools
	$(GO) test $(TEST_FLAGS) -race $(RACE_PKGS)
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v -x -F "$$($(GO) list $(RACE_PKGS))")
	cd $(AGENT) && $(GO) test $(TEST_FLAGS) ./...
	cd $(FERRET) && $(GO) test $(TEST_FLAGS) ./...
	cd $(SIDECARS) && GOWORK=off $(GO) test $(TEST_FLAGS) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) vet -tags conformance ./test/conformance
	bash hack/staticcheck.sh ./...
	bash hack/staticcheck.sh -tags e2e ./test/...
	bash hack/staticcheck.sh -tags conformance ./test/conformance
	cd $(AGENT) && $(GO) vet ./...
	cd $(FERRET) && $(GO) vet ./...
	cd $(SIDECARS) && GOWORK=off $(GO) vet ./...
	cd $(IMAGETOOLS) && GOWORK=off $(GO) vet ./...

## sanity: csi-test v5.4.0 sanity against cmd/csi-driver's services, with real bind mounts (root);
## then again with layout btrfs on a btrfs loop filesystem (pkg/csidriver/btrfssanity).
sanity:
	$(GO) test ./pkg/csidriver -run TestSanity -count=1 -v
	$(GO) test ./pkg/csidriver/btrfssanity -count=1 -v

## fuzz: a short run of each fuzz target (the seed corpus also runs in `make unit`).
fuzz:
	$(GO) test ./pkg/volid -run '^$$' -fuzz FuzzParse -fuzztime 30s
	$(GO) test ./pkg/gluster -run '^$$' -fuzz FuzzParse -fuzztime 30s

## deps: install the system packages the tests need (Debian, as root).
deps:
	bash hack/install-deps.sh

## tools: build (once, cached outside the repo) etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler, kubectl, the kubelet, kwok and helm.
tools:
	bash hack/build-tools.sh >/dev/null
	bash hack/helm.sh --print-path >/dev/null

## images: OCI images (docker-archive tarballs in bin/images, listed with their
## digests in bin/images/images.txt) of every binary deploy/ runs, the sidecars
## and FerretDB, without Docker or a registry; see README "Images".
images:
	bash hack/build-images.sh $(IMAGES_DIR) >/dev/null

## image-check: each image is valid, its program runs inside it and reports its
## version, the node image has the mount helpers, the controller gluster and ssh.
image-check:
	cd $(IMAGETOOLS) && GOWORK=off CARVE_IMAGES_DIR=$(IMAGES_DIR) $(GO) test -count=1 -v ./check

## e2e: the StatefulSet story on a real local control plane and a real NFS
## server (kwok nodes), and on a real node (containerd + kubelet) running the
## images with carve deployed from deploy/csi-driver.
e2e: tools images image-check
	CARVE_IMAGES_DIR=$(IMAGES_DIR) $(GO) test -tags e2e $(TEST_FLAGS) -timeout 60m -v ./test/...
	cd $(FERRET) && CARVE_IMAGES_DIR=$(IMAGES_DIR) $(GO) test -tags e2e $(TEST_FLAGS) -run TestFerretRealNode -v .

## conformance: the upstream storage e2e suite (e2e.test v1.34.4, External.Storage, built
## with agnhost by hack/build-tools.sh e2e) against carve deployed from deploy/csi-driver
## on a real node, NFS and GlusterFS; see docs/conformance.md. CONFORMANCE_SET=fast
## (default: the specs marked neither [Slow] nor [Serial]), slow, serial or all;
## CONFORMANCE_BACKEND=NFS or Gluster runs one backend.
E2E_IMAGES_DIR ?= $(CURDIR)/bin/e2e-images
CONFORMANCE_SET ?= fast
CONFORMANCE_BACKEND ?=
conformance: tools images
	bin=$$(bash hack/build-tools.sh e2e) && \
	bash hack/build-conformance-images.sh $(E2E_IMAGES_DIR) "$$bin" >/dev/null && \
	CONFORMANCE_SET=$(CONFORMANCE_SET) CARVE_E2E_BIN="$$bin" CARVE_E2E_IMAGES=$(E2E_IMAGES_DIR) CARVE_IMAGES_DIR=$(IMAGES_DIR) \
		$(GO) test -tags conformance -count=1 -timeout 150m -run 'TestExternalStorage$(CONFORMANCE_BACKEND)' -v ./test/conformance

## conformance-full: every spec, [Slow] and [Serial] included (not in CI: see docs/conformance.md).
conformance-full:
	$(MAKE) conformance CONFORMANCE_SET=all

## bench: 1000 claims at once, reporting seconds to PVs and to Bound, claims per
## second and memory: BenchmarkClaims (the provisioner as a host process) and
## BenchmarkShippedDeployments (deploy/csi-driver and deploy/provisioner side by
## side on a real node, images and share changed only; README "Sizing"; BENCH_ROUNDS
## runs them in turn and gives the median ratio, bin/bench/shipped.txt).
## BENCH_CLAIMS, BENCH_KCM_QPS (the controller-manager's --kube-api-qps, default 500).
## BenchmarkBacklog: a backlog of claims worked through by carve and by a bare client with
## carve's client settings (the API limit), the ratio (bin/bench/backlog.txt;
## BENCH_BACKLOG_REPEAT rounds, BENCH_BACKLOG_CLAIMS).
## BenchmarkCacheMemory: memory at BENCH_CACHE_PVS (10000,20000) PVs and claims, restarts
## after SIGKILL and SIGTERM (bin/bench/cache-memory.txt). BENCH_BASELINE_BIN: builds to compare.
## BenchmarkGlusterCreate: Gluster create latency, subdir with quota (cold, warm p50/p99) and
## volume mode, before/after side by side (bin/bench/gluster-create.txt).
## BenchmarkSnapshotLayouts: snapshot/clone/restore of a volume of many files, copy vs reflink (XFS loop)
## vs btrfs subvolume snapshot side by side (bin/bench/snapshot-layouts.txt; BENCH_SNAPSHOT_FILES).
## BenchmarkCSICreateVolume: CSI CreateVolume over gRPC at concurrency 1/16/64, calls/s and p50/p99
## (bin/bench/csi-create.txt; BENCH_CSI_CALLS). BenchmarkCSIDeleteManyFiles: DeleteVolume of a volume
## of BENCH_DELETE_FILES (100000) files, the call and the background purge (bin/bench/csi-delete.txt).
bench: tools images
	CARVE_IMAGES_DIR=$(IMAGES_DIR) $(GO) test -tags e2e -run '^$$' -bench 'BenchmarkClaims|BenchmarkBacklog|BenchmarkCacheMemory|BenchmarkShippedDeployments' -benchtime 1x -count=1 -timeout 90m -v ./test/e2e
	$(GO) test -run '^$$' -bench 'BenchmarkGlusterCreate' -benchtime 1x -count=1 -timeout 30m -v ./pkg/gluster
	$(GO) test -run '^$$' -bench 'BenchmarkSnapshotLayouts' -benchtime 1x -count=1 -timeout 30m ./pkg/dirvol
	$(GO) test -run '^$$' -bench 'BenchmarkCSICreateVolume|BenchmarkCSIDeleteManyFiles' -benchtime 1x -count=1 -timeout 30m ./pkg/csidriver

## demo: the same story for a person to watch; stays up until Ctrl-C (DEMO_FLAGS=--exit to stop at the end).
demo:
	$(GO) run ./hack/demo $(DEMO_FLAGS)

clean:
	rm -rf bin/
