# ooda — see README.md. Build outputs and control-plane binaries are cached outside the
# repository (keyed by version), so fresh clones reuse them.
SHELL := /bin/bash
OODA_CACHE ?= $(HOME)/.cache/ooda
CARGO_TARGET_DIR ?= $(OODA_CACHE)/target
export OODA_CACHE CARGO_TARGET_DIR

.PHONY: all build crds control-plane tools image kind-node cluster-up cluster-down demo test test-unit e2e e2e-kind fuzz lint soak bench-operator bench-gateway bench-sites bench-wake bench-dashboard bench-ai

all: build

build:
	cargo build --locked

## Regenerate crds/ and the chart's copy from the Rust types (a test fails when they drift).
crds:
	cargo run --locked -q -- crds --out crds
	cargo run --locked -q -- crds --out charts/ooda/files/crds

## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok.
control-plane:
	scripts/build-control-plane.sh

## helm and kubeconform, from the Go module proxy, and kubeconform's schemas.
tools:
	scripts/build-tools.sh

## ooda's image as an OCI archive (buildah, no Docker daemon), loaded into the bed's real node.
image:
	scripts/build-image.sh

## kind, kubeadm, kube-proxy, CoreDNS and a kind node image, built offline (no registry).
kind-node:
	scripts/build-kind-node.sh

cluster-up:
	scripts/cluster-up.sh

cluster-down:
	scripts/cluster-down.sh

## Local control plane + CRDs + examples, shown with kubectl. The cluster keeps running.
demo:
	scripts/demo.sh

## Everything: unit and integration tests; brings the cluster up and down.
test:
	scripts/test.sh

## helm install onto the bed's real node, then the e2e suite (tests/e2e) against the release.
e2e:
	scripts/e2e.sh

## The e2e suite against ooda installed on a kind cluster of a private Docker engine, offline.
e2e-kind:
	scripts/e2e-kind.sh

## Every fuzz target in fuzz/ (libFuzzer, cargo-fuzz) for OODA_FUZZ_SECONDS each (300 by default).
fuzz:
	scripts/fuzz.sh

## Unit tests only (no cluster).
test-unit:
	cargo test --locked --lib --bins --test crds

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

## 30 minutes of mixed load (OODA_SOAK_MINUTES), every process sampled; writes benches/reports/soak.md.
soak:
	scripts/soak.sh

## 1,000 and 3,000 projects, each on a fresh local control plane, with the bed's own floor and a
## leader failover; writes benches/reports/operator-scale.md.
bench-operator:
	scripts/bench-operator.sh

## Gateway preview proxy vs direct and nginx, sign-ins, wakes; writes benches/reports/gateway-proxy.md.
bench-gateway:
	scripts/bench-gateway.sh

## Publishing a 50 MB site (tar, tar.gz) and serving it, gateway vs S3; writes benches/reports/sites.md.
bench-sites:
	scripts/bench-sites.sh

## Waking hibernated projects on the real node, runc vs gVisor; writes benches/reports/wake-real.md.
bench-wake:
	scripts/bench-wake.sh

## The dashboard in Chromium: phase change to screen, and its weight; writes benches/reports/dashboard.md.
bench-dashboard:
	scripts/bench-dashboard.sh

## The AI relay: time to first byte and throughput beside the upstream asked directly, and memory
## with 100 open streams (benches/reports/ai-relay.md).
bench-ai:
	scripts/bench-ai.sh
