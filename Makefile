# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
N ?= 2000
PG_URL ?= postgresql://postgres@127.0.0.1:5432/test
APT_TEST_PACKAGES := dovecot-imapd chromium redis-server

.PHONY: install run test test-sqlite test-postgres system-packages demo bench lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' $(foreach d,$(wildcard examples/*/),-e $(d))
	@touch $(STAMP)

# Debian packages the tests use (a real Dovecot, headless Chromium, Redis), installed when missing.
system-packages:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: install
	@command -v redis-server >/dev/null || [ -n "$$REDIS_URL" ] || $(MAKE) APT_TEST_PACKAGES=redis-server system-packages
	$(PY) manage.py run

test: install system-packages lint
	$(PY) tests/support/services.py
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

test-sqlite:
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-postgres:
	@if $(PY) -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1',5432)))"; then \
		TEST_DATABASE_URL=$(PG_URL) $(PY) -m pytest -q $(PYTEST_ARGS); \
	else echo "PostgreSQL is not running on 127.0.0.1:5432: start it (see tests/support/services.py)"; exit 1; fi

demo: install system-packages
	$(PY) -m plugins.imap_inbox.demo

bench: install system-packages
	$(PY) -m bench --n $(N)

lint: install
	$(VENV)/bin/ruff check host_app plugins tests bench

clean:
	rm -rf $(VENV) instance *.egg-info
