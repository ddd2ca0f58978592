# crackcore: two commands do everything on a fresh machine: `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup.stamp
KERNEL := crackcore
NB_TIMEOUT ?= 14400
VARIANTS := centernet_r18 modified modified_aff
PAPERMILL = $(PY) -m papermill --kernel $(KERNEL) --execution-timeout $(NB_TIMEOUT) --cwd notebooks --log-output

.PHONY: setup test quick reproduce bench calibrate lab clean nbrefs

setup: $(STAMP)

# Re-installs only when the package metadata changes: a second `make setup` does nothing.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev,onnx]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "crackcore (.venv)" >/dev/null
	touch $(STAMP)

# Unit tests, then nbval on the quick-profile notebooks kept under tests/notebooks/. The quick runs are wiped
# first so that nbval recomputes every number from the current code (a stale model would hide a regression).
test: setup
	$(PY) -m pytest -q
	rm -rf runs/quick scratch/quick
	$(PY) -m pytest -q --nbval tests/notebooks --nbval-kernel-name $(KERNEL) \
	    --nbval-sanitize-with tests/notebooks/sanitize.cfg -p no:cacheprovider

# run_chain(profile, output folder): the five notebooks in order, notebook 03 once per Table I variant.
define run_chain
	mkdir -p $(2)
	$(PAPERMILL) notebooks/01_data_exploration.ipynb $(2)/01_data_exploration.ipynb -p profile $(1)
	$(PAPERMILL) notebooks/02_gaussian_labels.ipynb $(2)/02_gaussian_labels.ipynb -p profile $(1)
	for v in $(VARIANTS); do \
	    $(PAPERMILL) notebooks/03_training.ipynb $(2)/03_training_$$v.ipynb -p profile $(1) -p variant $$v || exit 1; \
	done
	$(PAPERMILL) notebooks/04_ablation_table1.ipynb $(2)/04_ablation_table1.ipynb -p profile $(1) $(3)
	$(PAPERMILL) notebooks/05_background_table2.ipynb $(2)/05_background_table2.ipynb -p profile $(1)
endef

# The whole paper, headless: data, three trainings (resumed or skipped when already done), Tables I and II.
reproduce: setup
	$(call run_chain,paper,results/notebooks,-p bench_runs 50)

# The same chain on a few dozen images and two epochs, into scratch/quick/: minutes, not hours.
quick: setup
	$(call run_chain,quick,scratch/quick/notebooks)

# Regenerate nbval's references on purpose (after a deliberate change to a loss, the decoder or the generator).
nbrefs: setup
	rm -rf runs/quick scratch/quick
	$(call run_chain,quick,tests/notebooks)

# Speed and memory (issue 6): results/bench/{table1,routes,training,predict}.json, summary.md and the README table.
bench: setup
	$(PY) -c "from crackcore.experiment import ensure_data, get_profile; ensure_data(get_profile('paper'))"
	$(PY) -m crackcore bench --readme

# The synthetic data's one difficulty calibration (issue 3): modified_aff on 80 % of train, AP on the other 20 %.
calibrate: setup
	$(PY) -c "from crackcore.experiment import calibrate; print(calibrate())"

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# Removes what runs made; committed results/ are kept (delete them by hand if you mean it).
clean:
	rm -rf scratch runs data/synth .pytest_cache .hypothesis
