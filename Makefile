# recalloc — the two commands: `make demo` (run it) and `make test` (prove it).
SHELL := /bin/bash
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
CLI := $(TARGET_DIR)/release/recalloc
DEMO_DATA ?= data/goodbooks
DEMO_TRACE ?= data/traces/crane/input0.csv
# Three readers with the most ratings in the bundled sample.
DEMO_USERS ?= 25266 6305 52581

.PHONY: build deps model demo test test-repeat up down reset bench lint fmt install chart manifests soak image

build: deps
	cargo build --release --bins

## libtorch (the build links it) and the model, both cached outside the clone.
deps:
	@bash deploy/local/libtorch.sh
	@bash deploy/local/model.sh

## Fetch a model into models/<MODEL> (git-ignored): all-MiniLM-L6-v2 (the default) or
## all-mpnet-base-v2; the service runs the one RECALLOC_EMBED_MODEL_DIR names.
MODEL ?= all-MiniLM-L6-v2
model:
	bash deploy/local/model.sh $(MODEL)

install:
	bash deploy/local/install.sh

## Start the local cluster, load the bundled goodbooks subset, embed the books, train, and show
## recommendations with explanations for three readers and the evaluation against popularity.
demo: build up
	@bash deploy/local/load-demo.sh $(DEMO_DATA)
	@echo "waiting for the featurizer and the embed worker to catch up…"
	@bash deploy/local/settle.sh
	$(CLI) train --algorithm hybrid
	@for u in $(DEMO_USERS); do $(CLI) recommend --user $$u -k 5 --explain; done
	@echo "offline, on a random 80/20 split of the same data: what Recommend serves against popularity, ALS and item-item neighbours"
	$(CLI) eval goodbooks $(DEMO_DATA)
	@echo "the scheduler's live plan for the services (dry run: planned, not applied):"
	$(CLI) plan
	@if [ -f $(DEMO_TRACE) ]; then \
	  $(CLI) simulate --trace $(DEMO_TRACE) --capacity-per-pod 15 --startup 60s --chart .local/simulate.svg; \
	else echo "no load trace at $(DEMO_TRACE): autoscaling simulation skipped (set DEMO_TRACE=FILE)"; fi
	@echo "the cluster is still up: 'make down' stops it"

## Unit, property and integration tests (the console's in headless Chromium), and the Helm
## chart's checks; installs and starts Redis, the broker and the browser itself.
test: install
	bash deploy/chart/check.sh
	export RECALLOC_TEST_PYTHON=$$(bash deploy/local/pyenv.sh) && \
	export RECALLOC_TEST_PLAYWRIGHT=$$(bash deploy/local/browser.sh) && \
	cargo build --release --bins && \
	cargo test --release --workspace --exclude recalloc-integration-tests && \
	cargo test --release -p recalloc-integration-tests -- --test-threads=1

## The integration suite N times in a row (default 10), listing every test that failed once.
N ?= 10
test-repeat: install
	bash deploy/local/test-repeat.sh $(N)

## The Helm chart with the real helm (v3.17.2, fetched once by deploy/local/helm.sh): helm lint
## --strict, helm template, values against its schema, kubernetes-validate, deploy/k8s up to date,
## the Role, impossible values refused.
chart:
	bash deploy/chart/check.sh

## Re-render deploy/k8s from the chart's default values with helm template (after changing the chart).
manifests:
	bash deploy/chart/render.sh

## The container image recalloc:<version> (deploy/docker/Dockerfile) built with podman from the
## release binaries, libtorch and the model, then checked inside: every binary's --help and the
## embed service's model load; prints its size. Installs podman and makes its Debian base itself.
image: build
	bash deploy/docker/image.sh

up: build
	bash deploy/local/up.sh

down:
	bash deploy/local/down.sh

## Remove the local cluster's data and logs (stop it first).
reset: down
	rm -rf .local

## Benchmarks against their references, measured in the same run; rows go to bench/results.md.
bench: build install
	cargo build --release --examples
	bash bench/ingest.sh
	bash bench/embed.sh
	bash bench/rank.sh
	bash bench/scale.sh
	bash bench/scheduler.sh
	bash bench/soak.sh

## Only the 10-minute soak (SOAK_SECONDS to change its length).
soak: build install
	cargo build --release --examples
	bash bench/soak.sh

lint: deps
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
