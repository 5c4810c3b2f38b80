# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Where `make run` and `make demo` serve: `make run PORT=8000` when 5000 is taken.
HOST ?= 127.0.0.1
PORT ?= 5000
N ?= 2000
LIVE_INBOXES ?= 1000
SEARCH_MESSAGES ?= 100000
PG_URL ?= postgresql://postgres@127.0.0.1:5432/test
APT_TEST_PACKAGES := dovecot-imapd chromium redis-server
# The real OpenID provider the OAuth 2.0 mailbox tests start (tests/support/oauth_server.py), from npm.
OIDC_PROVIDER_DIR := tests/support/oidc_provider

# pytest-xdist workers for each pass: the tests mostly wait on Dovecot, Redis, PostgreSQL and Chromium,
# so more workers than the 2 cores of the CI machine still pay. Each worker has its own databases.
# --dist loadfile: a module's tests run on one worker, so a module-scoped fixture (the bench smoke's
# minute-long harness run, a private redis-server) is built once, not once per worker.
# --no-loadscope-reorder: hand modules out in collection order (tests/conftest.py puts the ones with
# minute-long tests first), not largest test count first, which left those few-test modules for last.
TEST_WORKERS ?= 3
# 2 when the PostgreSQL pass runs beside the SQLite pass (make test): Redis databases of its own.
POSTGRES_REDIS_PASS ?= 1
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: install run test test-sqlite test-postgres services system-packages demo bench bench-live bench-search node-packages lint clean

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

# The npm packages of the tests, exactly as package-lock.json pins them; again whenever the lock changes.
node-packages: $(OIDC_PROVIDER_DIR)/node_modules/.installed

$(OIDC_PROVIDER_DIR)/node_modules/.installed: $(OIDC_PROVIDER_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 20 or newer with npm is needed for the OAuth tests (nodejs)"; exit 1; }
	cd $(OIDC_PROVIDER_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: install
	@command -v redis-server >/dev/null || [ -n "$$REDIS_URL" ] || $(MAKE) APT_TEST_PACKAGES=redis-server system-packages
	@$(PY) manage.py run --host $(HOST) --port $(PORT)

# Every test on SQLite and, at the same time, on PostgreSQL the tests that reach the database: the
# others are marked dialect_independent at collection (tests/conftest.py) and have nothing to learn
# from a second run. The two passes overlap because much of their time is spent waiting (on Dovecot,
# RQ workers, Chromium, sleeps of token and lock expiry), not computing. The PostgreSQL pass takes the
# Redis databases next to the SQLite pass's (TEST_REDIS_PASS=2, host_app/testing.py); each pass prints
# its report when it ends (--output-sync), so the two never interleave.
test: install system-packages node-packages lint services
	$(MAKE) -j2 --output-sync=recurse test-sqlite test-postgres POSTGRES_REDIS_PASS=2

services: install
	$(PY) tests/support/services.py

test-sqlite: install
	$(PYTEST) $(PYTEST_ARGS)

test-postgres: install
	@if $(PY) -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1',5432)))"; then \
		TEST_REDIS_PASS=$(POSTGRES_REDIS_PASS) TEST_DATABASE_URL=$(PG_URL) $(PYTEST) -m "not dialect_independent" $(PYTEST_ARGS); \
	else echo "PostgreSQL is not running on 127.0.0.1:5432: start it (see tests/support/services.py)"; exit 1; fi

demo: install system-packages
	@$(PY) -m plugins.imap_inbox.demo --host $(HOST) --port $(PORT)

# The sync benchmark, automations over 20,000 contacts, the live section (1,000 watched inboxes), then
# e-mail search (see bench/README.md).
bench: install system-packages
	$(PY) -m bench --n $(N)
	$(PY) -m bench.automations
	$(PY) -m bench.live --inboxes $(LIVE_INBOXES)
	$(PY) -m bench.search --messages $(SEARCH_MESSAGES)

bench-live: install system-packages
	$(PY) -m bench.live --inboxes $(LIVE_INBOXES)

bench-search: install
	$(PY) -m bench.search --messages $(SEARCH_MESSAGES)

lint: install
	$(VENV)/bin/ruff check host_app plugins tests bench

clean:
	rm -rf $(VENV) instance *.egg-info $(OIDC_PROVIDER_DIR)/node_modules
