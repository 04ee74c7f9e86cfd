# make test: create the virtual environment when missing, install the requirements, run the tests.
# make demo: the same set-up, then the main job on the embedded default.
# VENV may point elsewhere (CI keeps it in a cache directory outside the clone).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
PYTEST_ARGS ?=

.PHONY: test demo media venv clean

venv: $(STAMP)

# Reinstall only when requirements.txt changes; the stamp records the last successful install.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@cp requirements.txt $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) tools/demo.py

# The README's pictures into media/ (tools/make_media.py); the first run also trains the demo's models.
media: $(STAMP)
	$(PY) tools/make_media.py

clean:
	rm -rf $(VENV) .pytest_cache
