# The one interface to esmpi: CI runs `make test`; users run `make train`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ENV    ?= CartPole-v1
RANKS  ?= 2
ARGS   ?=
INSTALLED := $(VENV)/.installed

.PHONY: install lint slurm opengl test train bench clean

# Create the virtual environment and install esmpi with MPICH (so mpiexec comes with it).
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[mpich,test,atari,robotics]"
	touch $@

install: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check esmpi tests bin
	$(BIN)/ruff format --check esmpi tests bin
	$(BIN)/mypy esmpi

# Debian's Slurm and munge for tests/test_slurm.py, which start a real one-node cluster. Installed
# with apt where missing; where apt cannot run (not root, not Debian) those tests skip and say so.
SLURM_PROGRAMS := slurmctld slurmd munged sbatch srun scontrol
slurm:
	@missing=0; for program in $(SLURM_PROGRAMS); do \
	    PATH="$$PATH:/usr/sbin" command -v $$program >/dev/null 2>&1 || missing=1; done; \
	if [ $$missing = 0 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; } \
	    || echo "*** make slurm: apt-get failed; the Slurm tests will be skipped ***"; \
	else echo "*** make slurm: cannot install slurm-wlm and munge here (needs root and apt-get);" \
	    "the Slurm tests will be skipped ***"; fi

# Mesa's EGL (software rendering, llvmpipe) and OSMesa for tests/test_offscreen.py, which record
# MuJoCo videos on this headless machine; installed as Slurm is, and skipped with a reason where not.
OPENGL_LIBRARIES := libEGL.so.1 libEGL_mesa.so.0 libOSMesa.so.8
opengl:
	@missing=0; for library in $(OPENGL_LIBRARIES); do \
	    ldconfig -p | grep -q "$$library" || missing=1; done; \
	if [ $$missing = 0 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	        libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6; } \
	    || echo "*** make opengl: apt-get failed; the MuJoCo video tests may be skipped ***"; \
	else echo "*** make opengl: cannot install Mesa's EGL and OSMesa here (needs root and" \
	    "apt-get); the MuJoCo video tests may be skipped ***"; fi

test: lint slurm opengl
	$(BIN)/python -m pytest -q --durations=15

# make train ENV=HalfCheetah-v5 RANKS=2 ARGS="--generations 200"
train: $(INSTALLED)
	$(BIN)/esmpi train --env $(ENV) --threads $(RANKS) $(ARGS)

# Throughput against a bare env.step loop, on quiet cores: writes bench.json and prints a table.
bench: $(INSTALLED)
	$(BIN)/esmpi bench --json bench.json $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .numba-cache
