# ipng-stats — run `make help` for the targets.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
PKGS      := ./...
BENCHTIME ?= 1s
FUZZTIME  ?= 2m
FUZZ_SMOKE_TIME ?= 10s

# Packages Debian needs for building the BPF object, running every test and
# packaging. `go build` alone needs none of them: the BPF object is committed.
DEPS := clang llvm libbpf-dev bpftool iproute2 util-linux kmod nginx prometheus wrk systemd \
        debhelper dpkg-dev lintian man-db ca-certificates git make gcc libc6-dev chromium tmux \
        etcd-server containerd runc containernetworking-plugins haproxy caddy linux-perf

.PHONY: help build generate generate-bpf generate-monitoring check-generated chart test-chart test test-e2e k8s-components chart-tool test-k8s bench fuzz fuzz-smoke lint deps deb image clean run

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build ./ipng-stats (no clang needed)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o ipng-stats ./cmd/ipng-stats

run: build ## run the agent on the embedded default configuration (root)
	./ipng-stats agent

generate: generate-bpf generate-monitoring ## regenerate every committed generated file

generate-bpf: ## regenerate the bpf2go output from bpf/sockops.c (needs clang, libbpf-dev)
	$(GO) generate ./bpf/

generate-monitoring: ## regenerate the dashboards, rules and alerts in deploy/monitoring/ from monitoring/
	$(GO) generate ./monitoring/

check-generated: generate chart ## fail when committed generated files (BPF objects, monitoring bundle, rendered manifest) are stale
	@git diff --exit-code -- bpf/ || { echo "generated BPF files are not up to date: run 'make generate' and commit"; exit 1; }
	@git diff --exit-code -- deploy/monitoring/ && test -z "$$(git status --porcelain -- deploy/monitoring/)" || { echo "the monitoring bundle is not up to date: run 'make generate' and commit"; exit 1; }
	@git diff --exit-code -- deploy/kubernetes/ || { echo "deploy/kubernetes/ipng-stats.yaml is not up to date: run 'make chart' and commit"; exit 1; }

# The chart's tooling is a module of its own (Helm's Go API, no helm binary).
chart: ## lint the Helm chart and render deploy/kubernetes/ipng-stats.yaml from it
	cd deploy/helm/tool && $(GO) run . -chart ../ipng-stats -out ../../kubernetes/ipng-stats.yaml

test-chart: ## helm lint, values schema and golden renderings of the chart
	cd deploy/helm/tool && $(GO) test -count=1 ./...

# The proxy's tests run a second time on net/http's HTTP/1.1 loop
# (proxy.http1_loop: net_http; the own loop is the default).
NET_HTTP_TESTS = Proxy|Smuggling|StrictParsing|Own|TLS|Gate

test: ## every test with -race (privileged ones skip without root; with IPNG_STATS_E2E=1 a skip fails)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	IPNG_STATS_HTTP1_LOOP=net_http $(GO) test -race -count=1 -timeout 10m ./proxy/ ./tests/ -run '$(NET_HTTP_TESTS)'

# Privileged tests live in many packages (bindings, loader, attribution,
# nginxlog, connstats, cmd/ipng-stats, tests, ...): all of them run, and
# IPNG_STATS_E2E=1 turns every skip (no root, no promtool, no nginx) into a
# failure, so nothing privileged can pass by not running.
test-e2e: ## every test with -race and IPNG_STATS_E2E=1: all privileged tests in all packages must run (root)
	IPNG_STATS_E2E=1 $(GO) test -race -count=1 -timeout 30m $(PKGS)
	IPNG_STATS_E2E=1 IPNG_STATS_HTTP1_LOOP=net_http $(GO) test -race -count=1 -timeout 10m ./proxy/ ./tests/ -run '$(NET_HTTP_TESTS)'

# The single-node Kubernetes cluster test (tests/k8s/README.md), run by
# .ci/run. tests/k8s/tools/go.mod pins k8s.io/kubernetes (its k8s.io/*
# staging modules replaced by the published versions) and Prometheus
# (github.com/prometheus/prometheus v0.3xx = Prometheus 3: Debian's 2.42
# lacks kubernetes_sd_configs); tests/k8s/go.work adds the chart tool's
# module, so the three resolve every module they share to one version and
# a package they share is compiled once. The four Kubernetes components are
# one binary (tests/k8s/tools/kube, run through a link per component) and
# are linked once. They and Prometheus are built from the Go module proxy
# into K8S_CACHE, outside the clone, once per key: the versions (go.mod,
# go.sum, go.work, the chart tool's go.mod and go.sum), the Go toolchain,
# the multi-call main and the build command. Every other discovery of
# Prometheus is left out by its build tags. What is not the standard
# library is compiled without optimisation or inlining (K8S_GCFLAGS: less
# compile time, figures in tests/k8s/README.md; the standard library stays
# optimised and is shared with make build and the test binary), the
# compiler collecting garbage less often (GOGC). The chart tool is ours and is not cached: on a
# cold cache it is built by the same go build as the components (its
# packages compile while they link), otherwise alone from the build cache.
K8S_TOOLS      := tests/k8s/tools
K8S_WORK       := $(CURDIR)/tests/k8s/go.work
K8S_VERSION     = $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2; exit}' $(K8S_TOOLS)/go.mod)
K8S_COMPONENTS := kube-apiserver kube-controller-manager kube-scheduler kubelet
K8S_PACKAGES   := ./kube github.com/prometheus/prometheus/cmd/prometheus
K8S_CHART_TOOL := github.com/ipng/ipng-stats/deploy/helm/tool
K8S_GCFLAGS    := -gcflags="all=-N -l" -gcflags=std=
K8S_BUILD       = GOWORK=$(K8S_WORK) CGO_ENABLED=0 GOGC=400 $(GO) build -trimpath $(K8S_GCFLAGS) -tags remove_all_sd,enable_kubernetes_sd \
	-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION)))"
K8S_KEY         = $(shell { cat $(K8S_TOOLS)/go.mod $(K8S_TOOLS)/go.sum $(K8S_TOOLS)/kube/main.go $(K8S_WORK) $(K8S_WORK).sum deploy/helm/tool/go.mod deploy/helm/tool/go.sum; $(GO) version; echo '$(subst $(CURDIR),.,$(K8S_BUILD)) $(K8S_PACKAGES)'; } | sha256sum | cut -c1-12)
K8S_CACHE      ?= /var/cache/ipng-stats/k8s/$(K8S_VERSION)-$(K8S_KEY)

k8s-components: ## build the cluster test's Kubernetes components and Prometheus into K8S_CACHE unless they are there
	@missing=; for b in $(K8S_COMPONENTS) prometheus; do test -x $(K8S_CACHE)/$$b || missing=1; done; \
	if [ -z "$$missing" ]; then echo "Kubernetes components and Prometheus cached in $(K8S_CACHE)"; exit 0; fi; \
	mkdir -p build $(dir $(K8S_CACHE)) && tmp=$$(mktemp -d $(K8S_CACHE).tmp.XXXXXX) && \
	echo "building $(K8S_PACKAGES) into $(K8S_CACHE), and the chart tool" && \
	(cd $(K8S_TOOLS) && $(K8S_BUILD) -o $$tmp/ $(K8S_PACKAGES) $(K8S_CHART_TOOL)) && \
	mv $$tmp/tool build/ipng-stats-chart && \
	for b in $(K8S_COMPONENTS); do ln -s kube $$tmp/$$b; done && chmod 755 $$tmp && \
	rm -rf $(K8S_CACHE) && mv $$tmp $(K8S_CACHE)

chart-tool: ## build deploy/helm/tool (helm install/upgrade with Helm's Go API) into build/ipng-stats-chart, in the components' module graph
	cd $(K8S_TOOLS) && $(K8S_BUILD) -o $(CURDIR)/build/ipng-stats-chart $(K8S_CHART_TOOL)

# The image and the components build at once (on a cold machine the
# components' module downloads leave CPUs idle); the chart tool after the
# components, to reuse the packages they compiled (nothing to do when
# k8s-components has just built it). The test binary is built with the
# flags of make build, so it shares its packages and standard library.
test-k8s: ## single-node Kubernetes cluster test (root; components cached under K8S_CACHE, see tests/k8s/README.md)
	$(MAKE) --no-print-directory -j2 image k8s-components
	$(MAKE) --no-print-directory chart-tool
	IPNG_STATS_K8S_CACHE=$(K8S_CACHE) CGO_ENABLED=0 $(GO) test -trimpath -tags k8s -count=1 -timeout 30m -v ./tests/k8s/...

bench: ## benchmarks (see docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

# Both run every fuzz target the source declares (tests/fuzz.sh finds them:
# a new one needs no edit here), one after the other, and fail naming the
# target and the failing input written to its package's testdata/fuzz/.
# FUZZ_MATCH=REGEXP picks targets by "package.Target", e.g. loader.FuzzTupleStamps.
fuzz: ## run every fuzz target for FUZZTIME (default 2m), one after the other; findings land in testdata/fuzz/
	GO=$(GO) tests/fuzz.sh $(FUZZTIME)

fuzz-smoke: ## every fuzz target for FUZZ_SMOKE_TIME (default 10s) with 2 workers, as CI runs them
	GO=$(GO) tests/fuzz.sh $(FUZZ_SMOKE_TIME) -parallel 2

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

deps: ## install the Debian packages for generate, tests and packaging (root)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEPS)

deb: ## build the Debian package into ../
	dpkg-buildpackage -us -uc -b

# The image's times are the last commit's: the same commit gives the same image.
image: build ## container image from the static binary, no registry or engine: OCI layout build/image and build/ipng-stats-image.tar
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) \
		CGO_ENABLED=0 $(GO) run -trimpath ./cmd/ipng-stats-image -binary ipng-stats -version $(VERSION) -revision $(REVISION) \
		-layout build/image -archive build/ipng-stats-image.tar

clean: ## remove build output
	rm -f ipng-stats
	rm -rf build _build debian/ipng-stats debian/.debhelper debian/files debian/*.substvars debian/debhelper-build-stamp
