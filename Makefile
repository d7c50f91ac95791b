# Two commands on a new machine: `make local` (the local stack) and `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: local test lint deploy destroy

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# TIER=memcached|sim (default: memcached when it is on PATH); see README, "The local stack".
local: $(STAMP)
	TIER=$(TIER) $(PY) -m local_stack

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# make deploy STAGE=prod ARTIFACT_BUCKET=… STACK_PARAMETERS="AlarmTopicArn=… VpcId=… …" [DRY_RUN=1]
# make destroy STAGE=prod [DELETE_TABLE=1] [DRY_RUN=1]
deploy: $(STAMP)
	$(PY) -m deploy.stack deploy --stage $(STAGE)

destroy: $(STAMP)
	$(PY) -m deploy.stack destroy --stage $(STAGE)
