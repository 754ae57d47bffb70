# smsblast: `make run` starts everything locally, `make test` runs lint and the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The whole suite on two processes (pytest-xdist); name a part to run it alone: PYTEST_ARGS=tests/campaigns/test_views.py
PYTEST_ARGS ?= -n 2
export DJANGO_SETTINGS_MODULE ?= config.settings.dev

.PHONY: run test lint install migrate demo assets bench-dispatch bench-import clean

# A .venv without pip is what `python3 -m venv` leaves when python3-venv was missing: it is created again.
$(VENV)/.installed: requirements.txt
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

assets: install
	mkdir -p var
	$(PY) manage.py vendor_assets
	$(PY) manage.py compilemessages --ignore=.venv -v 0
	$(PY) manage.py collectstatic --noinput -v 0

migrate: install
	mkdir -p var
	$(PY) manage.py migrate --noinput -v 0

demo: migrate
	$(PY) manage.py seed_demo

run: assets demo
	$(PY) -m config.devstack

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) manage.py makemigrations --check --dry-run

test: lint assets
	DJANGO_SETTINGS_MODULE=config.settings.test $(VENV)/bin/pytest $(PYTEST_ARGS)

bench-dispatch: install
	$(PY) bench/dispatch.py $(BENCH_ARGS)

bench-import: install
	$(PY) bench/import_subscribers.py $(BENCH_ARGS)

clean:
	rm -rf var staticfiles
