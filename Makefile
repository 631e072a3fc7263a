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

DEMO := liverzoo/data/demo
DEMO_OUT := runs/demo

# Train on the embedded CT, then segment the three demo CTs with the best checkpoint and
# score them against their labels, with PNG overlays (runs/demo/eval/overlays/) and report.html.
demo: $(STAMP)
	$(PY) tools/train.py --model=residual_unet
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)/ct $(DEMO_OUT)/ref
	cp $(DEMO)/lits117_crop128_ct.nii.gz $(DEMO_OUT)/ct/lits117.nii.gz
	cp $(DEMO)/lits117_crop128_seg.nii.gz $(DEMO_OUT)/ref/lits117.nii.gz
	cp $(DEMO)/totalseg_example_ct_sm.nii.gz $(DEMO_OUT)/ct/totalseg.nii.gz
	cp $(DEMO)/totalseg_example_liver_pred.nii.gz $(DEMO_OUT)/ref/totalseg.nii.gz
	cp $(DEMO)/dcmqi_3slice_ct.nii.gz $(DEMO_OUT)/ct/dcmqi.nii.gz
	cp $(DEMO)/dcmqi_3slice_liver.nii.gz $(DEMO_OUT)/ref/dcmqi.nii.gz
	$(PY) tools/predict.py --model_path=runs/residual_unet/best.keras --input=$(DEMO_OUT)/ct --output=$(DEMO_OUT)/pred
	$(PY) tools/evaluate.py --pred_dir=$(DEMO_OUT)/pred --ref_dir=$(DEMO_OUT)/ref --image_dir=$(DEMO_OUT)/ct \
		--output_dir=$(DEMO_OUT)/eval --report

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 --nbmake tests notebooks

clean:
	rm -rf $(VENV) runs tfrecords/demo
