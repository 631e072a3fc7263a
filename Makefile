# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall when setup.py changes; editable so tools/ and notebooks see the working tree.
$(STAMP): setup.py | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/train.py --model=residual_unet

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 --nbmake tests notebooks

clean:
	rm -rf $(VENV) runs tfrecords/demo
