# The two commands of the README. Both create and use the project's own virtual environment (.venv).
#   make demo   the main job on the embedded synthetic corpus (no download, no GPU needed): train, certify,
#               attack and perceptibility passes, report
#   make test   the whole test suite, including the real single-node SLURM cluster (needs root)
#   make test-fast   the unit tests only (math, shapes, plans, shard validation, merging): seconds, no cluster
#   make cluster     start the single-node SLURM test cluster (root; apt-get installs it on a fresh machine)

PYTHON ?= python3
VENV := .venv
AUDIOCERT := $(VENV)/bin/audiocert
LAUNCHER ?= local
RUNS := $(or $(AUDIOCERT_RUNS_DIR),runs)
WAIT := $(if $(filter slurm,$(LAUNCHER)),launcher.wait=true)
TEST_WORKERS ?= 3

.PHONY: demo test test-fast venv cluster clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The test cluster (installed with apt-get on a fresh machine), brought up while pip builds the venv: `make test`
# makes both at once (-j2), each target's output printed whole when it ends.
cluster:
	bash slurm/cluster.sh start

demo: $(VENV)/.installed
	@start=$$(date +%s); \
	$(AUDIOCERT) corpus && \
	$(AUDIOCERT) train train.max_minutes=2.75 && \
	$(AUDIOCERT) certify -m experiment=demo launcher=$(LAUNCHER) $(WAIT) && \
	$(AUDIOCERT) attack -m experiment=demo smoothing.sigma=0.25 attack.points_per_speaker=1 launcher=$(LAUNCHER) $(WAIT) && \
	$(AUDIOCERT) perceptibility -m experiment=demo smoothing.sigma=0.25 perceptibility.points_per_speaker=1 launcher=$(LAUNCHER) $(WAIT) && \
	$(AUDIOCERT) report --wandb $${WANDB_MODE:-offline} $(RUNS)/sweeps/demo && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; report: $(RUNS)/sweeps/demo/report/report.md"

# Three xdist workers (TEST_WORKERS; 0 = serial) on 2 cores, each taking whole test modules: the SLURM tests (in
# order, on one worker) mostly wait on the scheduler while the others compute, at a lower priority. `.ci/run` on a
# fresh clone, venv included (2026-12-07, this project's 2-core machine): 580 s, 493 s of it pytest (CI took 584 s
# for an earlier commit that took 608 s here). tests/conftest.py (pytest_collection_modifyitems,
# pytest_runtest_setup) says in what order and why.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target venv cluster
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--durations=20

test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow"

clean:
	rm -rf $(VENV) data runs
