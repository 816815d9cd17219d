# Two commands do everything on a fresh machine:
#   make demo   build .venv (when missing or stale), then run the main job `fwlab demo`
#   make test   build .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fwlab-installed

# Offline fallbacks: when the shared tokenizer cache / FineWeb-Edu sample sit beside the checkout
# (machines without internet), use them; elsewhere tiktoken and the hub download what they need.
SHARED      := $(abspath ../shared)
ifneq ($(wildcard $(SHARED)/tiktoken_cache/.),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tiktoken_cache
endif
# FineWeb-Edu first: the demo reads its sources in order and takes only as many tokens as this
# machine can train on in time; the sample's plain FineWeb file only tops it up (the demo says so).
SAMPLE      := $(wildcard $(SHARED)/data/fineweb-edu-sample/fineweb_edu.jsonl.gz) \
               $(wildcard $(SHARED)/data/fineweb-edu-sample/fineweb.jsonl.gz)
DEMO_SOURCE ?= $(SAMPLE)
DEMO_OUT    ?= results/demo
DEMO_ARGS   ?=

.PHONY: demo test setup lab clean-venv

setup: $(STAMP)

# The venv is rebuilt when requirements.txt or pyproject.toml change (fwlab itself is installed
# once, by the `-e .[export]` line of requirements.txt). The Jupyter kernel the notebooks name
# ("python3") is registered inside the venv so papermill and JupyterLab run them with its python,
# and started through fwlab's provisioner (fwlab/kernels.py): encrypted sockets, so no kernel
# warns that it runs over TCP without encryption.
KERNEL_JSON := $(VENV)/share/jupyter/kernels/python3/kernel.json
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fwlab)"
	$(PY) -m fwlab.kernels $(KERNEL_JSON)
	@touch $(STAMP)

demo: $(STAMP)
ifneq ($(strip $(DEMO_SOURCE)),)
	@echo "fwlab demo: using local data $(DEMO_SOURCE) (set DEMO_SOURCE= to stream from the hub)"
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/fwlab demo --source $(DEMO_SOURCE) --out $(DEMO_OUT) $(DEMO_ARGS)
else
	$(VENV)/bin/fwlab demo --out $(DEMO_OUT) $(DEMO_ARGS)
endif

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg $(PY) -m pytest -q --durations=20 $(PYTEST_ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root,)

clean-venv:
	rm -rf $(VENV)
