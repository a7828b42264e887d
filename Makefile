# The two commands a fresh machine needs: `make run` (the service, locally, with stand-ins) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test check catalogs messages

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed catalogs

# The admin's languages: each app/translations/<lang>/LC_MESSAGES/messages.po compiled to the .mo that
# Flask-Babel reads, again whenever the .po changes (pip install compiles them too, through setup.py).
CATALOGS := $(patsubst %.po,%.mo,$(wildcard app/translations/*/LC_MESSAGES/messages.po))
catalogs: $(CATALOGS)
app/translations/%/LC_MESSAGES/messages.mo: app/translations/%/LC_MESSAGES/messages.po $(VENV)/.installed
	$(BIN)/pybabel compile -l $* -i $< -o $@

# After changing a sentence: the template from the sources, then every catalog brought up to date
# (translate what is new or marked fuzzy, then `make catalogs`). README "Languages".
messages: $(VENV)/.installed
	$(BIN)/pybabel extract -F babel.cfg -o app/translations/messages.pot --no-location --sort-output \
		--project=paygate --copyright-holder=paygate .
	$(BIN)/pybabel update -i app/translations/messages.pot -d app/translations --no-location --width=100

# SQLite under instance/, built-in LTIaaS, Stripe and LMS stand-ins; open http://localhost:5000/_local/lms
run: install
	APP_ENV=local $(BIN)/flask --app wsgi db upgrade
	APP_ENV=local $(BIN)/python -m app.local

# Every test, on SQLite and on PostgreSQL (127.0.0.1:5432), with Debian's chromium for browser tests.
# Without PostgreSQL or chromium those tests skip and say why; CI sets REQUIRE_POSTGRES/REQUIRE_BROWSER.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Models and migrations agree (what CI checks besides the tests).
check: install
	rm -f instance/check.sqlite
	DATABASE_URL=sqlite:///$(CURDIR)/instance/check.sqlite APP_ENV=local $(BIN)/flask --app wsgi db upgrade
	DATABASE_URL=sqlite:///$(CURDIR)/instance/check.sqlite APP_ENV=local $(BIN)/flask --app wsgi db check
