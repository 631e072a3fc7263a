# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean notebooks

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall when setup.py changes; editable so tools/ and notebooks see the working tree.
$(STAMP): setup.py | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

DEMO := liverzoo/data/demo
DEMO_OUT := runs/demo
# The demo's training run; `make demo DEMO_RUN=runs/other` trains a fresh one (the trainer
# refuses to resume a run made with other settings, e.g. after the demo recipe changed).
DEMO_RUN ?= runs/residual_unet

# Train on three embedded patients, then segment the fourth, a whole-abdomen slab with a full
# field of view that the model never saw, through the predict path, and score it against its
# label: the printed liver Dice is what a user gets on a new scan (runs/demo/eval: cases.csv,
# overlays/, report.html).
demo: $(STAMP)
	$(PY) tools/train.py --model=residual_unet --model_dir=$(DEMO_RUN)
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)/ct $(DEMO_OUT)/ref
	cp $(DEMO)/totalseg_dicom_slab_ct.nii.gz $(DEMO_OUT)/ct/slab.nii.gz
	cp $(DEMO)/totalseg_dicom_slab_liver_pred.nii.gz $(DEMO_OUT)/ref/slab.nii.gz
	$(PY) tools/predict.py --model_path=$(DEMO_RUN)/best.keras --input=$(DEMO_OUT)/ct --output=$(DEMO_OUT)/pred
	$(PY) tools/evaluate.py --pred_dir=$(DEMO_OUT)/pred --ref_dir=$(DEMO_OUT)/ref --image_dir=$(DEMO_OUT)/ct \
		--output_dir=$(DEMO_OUT)/eval --report

# Re-run the notebooks and store their outputs in the files (what the repository page shows);
# `make test` executes them again from scratch.
notebooks: $(STAMP)
	$(VENV)/bin/jupyter-execute --inplace notebooks/01_quickstart.ipynb notebooks/02_model_zoo.ipynb \
		notebooks/03_export_to_phone.ipynb

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 --nbmake tests notebooks

clean:
	rm -rf $(VENV) runs tfrecords/demo
