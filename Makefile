# vmond: `make run` starts the daemon on a development configuration in ./var, `make test` runs the tests.
# Both set up everything they need: Debian packages (via apt-get) when missing, and a virtualenv in .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VMOND ?= $(VENV)/bin/vmond
VAR := var
CONFIG := $(VAR)/vmond.yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests use: a real browser, openssl for certificates, ffmpeg to compare clips with, a broker,
# an RTSP camera (GStreamer's RTSP server, x264enc from plugins-ugly, run by Debian's python3: tests/rtsp_server.py),
# PostgreSQL's server binaries (tests/postgres.py starts throw-away clusters of its own on free ports), and the load
# balancers of deploy/central (nginx, haproxy) and docker-compose to validate its compose file.
RTSP_TEST_DEBS := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly
TEST_DEBS := chromium openssl ffmpeg mosquitto postgresql nginx haproxy docker-compose $(RTSP_TEST_DEBS)
# The same suite on Debian 12's own library versions (what the .deb runs on).
DEBIAN_VENV := .venv-debian
DEBIAN_LIBS := python3-venv python3-aiohttp python3-aiohttp-jinja2 python3-aiosmtpd python3-peewee python3-pil \
	python3-yaml python3-sdnotify python3-jinja2 python3-av python3-paho-mqtt python3-pytest python3-pytest-aiohttp \
	python3-pytest-asyncio python3-hypothesis python3-setuptools python3-wheel apprise python3-psycopg2
PYTEST_ARGS ?=

.PHONY: run banner test test-debian test-faults lint clean distclean debs package bench-encode bench-ingest bench-central

run: $(VENV)/.stamp-run $(CONFIG)
	@$(MAKE) --no-print-directory banner
	exec $(VMOND) run --config $(CONFIG)

# The banner shows what $(CONFIG) says (vmond reads it; an invalid file stops here with its problems listed).
banner:
	@set -e; get() { $(VMOND) info --config $(CONFIG) --get "$$1"; }; \
	web=$$(get dashboard); smtp=$$(get smtp); camera=$$(get camera); data=$$(get data); \
	echo; \
	echo "  vmond: dashboard $$web  SMTP $$smtp  data in $$data"; \
	echo "  First run: open $${web}setup to create the admin,"; \
	echo "    or: $(VMOND) user add admin --role admin --config $(CONFIG)"; \
	if [ -n "$$camera" ]; then \
	  echo "  From another terminal, as the camera $$camera would:"; \
	  echo "    test mail (marks the camera 'test mail received', stays off the wall):"; \
	  echo "      $(VMOND) send-test --config $(CONFIG)"; \
	  echo "    an alarm on the wall: $(VMOND) send-test --alarm --config $(CONFIG)"; \
	  echo "    or mail any camera snapshot to $$camera via $$smtp"; \
	else \
	  echo "  No camera in $(CONFIG): add one on the dashboard's Cameras page, then send it a test with"; \
	  echo "    $(VMOND) send-test --to ADDRESS --config $(CONFIG)"; \
	fi; \
	echo

test: debs $(VENV)/.stamp-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault suite at full length (make test runs a bounded version): crash points, a minute of random SIGKILLs, a
# full disk (mounts a small tmpfs: root or password-less sudo), hostile clients.
test-faults: debs $(VENV)/.stamp-test
	VMOND_FAULTS=full $(PY) -m pytest -m faults -s $(PYTEST_ARGS)

# Debian's python3-* packages from /usr/bin/python3; only Playwright (not packaged by Debian) comes from PyPI.
test-debian: debs
	@$(MAKE) --no-print-directory debs TEST_DEBS="$(DEBIAN_LIBS)"
	test -x $(DEBIAN_VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(DEBIAN_VENV)
	$(DEBIAN_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	$(DEBIAN_VENV)/bin/python -m pip install -q playwright
	# PYTHONPATH: this tree, even where the vmond .deb is installed (its module would come first otherwise).
	PYTHONPATH=$(CURDIR) $(DEBIAN_VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench-encode: debs $(VENV)/.stamp-test
	$(PY) bench/encode.py

bench-ingest: debs $(VENV)/.stamp-test
	$(PY) bench/ingest.py

bench-central: debs $(VENV)/.stamp-test
	$(PY) bench/central.py

# ruff, the import layers, the type checker (its settings, and the files it checks, are in setup.cfg's [mypy]).
lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check vmond tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Build the Debian package from a clean copy of the tree, lint it, install it and run it end to end (root or sudo).
package:
	bash .ci/package

$(CONFIG):
	mkdir -p $(VAR)
	cp config/dev.yaml $(CONFIG)

# Debian's python3 needs python3-venv for `python3 -m venv`.
$(VENV)/bin/python:
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.stamp-run: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	touch $@ $(VENV)/.stamp-run

# Installing postgresql would create and start a system cluster on port 5432 that nothing here uses: Debian's
# createcluster.conf(5) setting create_main_cluster=false prevents it (an existing cluster is left alone).
debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  case " $$missing " in *" postgresql "*) \
	    $(SUDO) mkdir -p /etc/postgresql-common/createcluster.d && \
	    echo "create_main_cluster = false" | $(SUDO) tee /etc/postgresql-common/createcluster.d/vmond-tests.conf \
	      >/dev/null;; esac; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(DEBIAN_VENV) $(VAR)
