# The two commands a fresh machine needs: `make run` (the service, locally, with stand-ins) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test check format catalogs messages

# Every dependency (the build's setuptools and babel too) from requirements.lock, each file checked against its
# hashes, then the project itself without resolving anything again (README "Dependencies").
$(VENV)/.installed: pyproject.toml setup.py requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed catalogs

# The admin's languages: each paygate/translations/<lang>/LC_MESSAGES/messages.po compiled to the .mo that
# Flask-Babel reads, again whenever the .po changes (pip install compiles them too, through setup.py).
CATALOGS := $(patsubst %.po,%.mo,$(wildcard paygate/translations/*/LC_MESSAGES/messages.po))
catalogs: $(CATALOGS)
paygate/translations/%/LC_MESSAGES/messages.mo: paygate/translations/%/LC_MESSAGES/messages.po $(VENV)/.installed
	$(BIN)/pybabel compile -l $* -i $< -o $@

# After changing a sentence: the template from the sources, then every catalog brought up to date
# (translate what is new or marked fuzzy, then `make catalogs`). README "Languages".
messages: $(VENV)/.installed
	$(BIN)/pybabel extract -F babel.cfg -o paygate/translations/messages.pot --no-location --sort-output \
		--project=paygate --copyright-holder=paygate .
	$(BIN)/pybabel update -i paygate/translations/messages.pot -d paygate/translations --width=100

# SQLite under instance/, built-in LTIaaS, Stripe and LMS stand-ins; open http://localhost:5000/_local/lms
run: install
	APP_ENV=local $(BIN)/flask --app wsgi db upgrade
	APP_ENV=local $(BIN)/python -m paygate.application.local

# Every test, on SQLite and on PostgreSQL (127.0.0.1:5432), with Debian's chromium for browser tests.
# Without PostgreSQL or chromium those tests skip and say why; CI sets REQUIRE_POSTGRES/REQUIRE_BROWSER.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Style (ruff: lint and format) and layering (import-linter: each layer imports only those below it),
# then models and migrations agree: what CI checks besides the tests.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	rm -f instance/check.sqlite
	DATABASE_URL=sqlite:///$(CURDIR)/instance/check.sqlite APP_ENV=local $(BIN)/flask --app wsgi db upgrade
	DATABASE_URL=sqlite:///$(CURDIR)/instance/check.sqlite APP_ENV=local $(BIN)/flask --app wsgi db check

# Apply ruff's fixes and formatting (what `make check` asks for).
format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
