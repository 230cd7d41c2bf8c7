# openstack-ha-lab: `make lab` brings up the three-controller lab, `make test` tests it.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# Host packages: nspawn and the image builder, pcs/crm_* for the offline CIB tier,
# ssh for Ansible, python3-venv for the virtualenv on a fresh Debian, vagrant to
# validate the Vagrantfile, the openstack client for the lab's APIs, nmap for the
# firewall test's port scan, fence-agents and nftables for the failover catalogue's
# remote faults (the fence agent runs here; the partition's rules are checked here),
# python3-swift for the swift_ring module's unit tests.
HOST_PACKAGES := systemd-container mmdebstrap dpkg-dev iproute2 util-linux openssh-client \
	pcs pacemaker-cli-utils resource-agents python3-venv vagrant vagrant-libvirt \
	python3-openstackclient nmap fence-agents nftables python3-swift

.PHONY: lab test host-deps lint unit molecule verify down status clean failover-report

lab: host-deps ## boot the lab and converge the cluster (~11 min with the image cached)
	halab up
	halab argv-watch --out reports/argv-lab.json -- ansible-playbook playbooks/site.yml
	halab ssh overcloud-controller-0 pcs status

# Lint and the unit tier run beside molecule's create and converge instead of before
# them (both need no lab): each one's summary shows when it ends, failures again last.
BESIDE := lint unit
test: host-deps ## lint and unit tests beside molecule on the real lab
	@mkdir -p reports; for t in $(BESIDE); do rm -f reports/$$t.rc; done; \
	pids=""; for t in $(BESIDE); do \
	  { rc=0; $(MAKE) --no-print-directory $$t > reports/$$t.log 2>&1 || rc=$$?; \
	    echo $$rc > reports/$$t.rc; echo "== $$t (beside molecule): exit $$rc"; \
	    tail -n 14 reports/$$t.log; } & pids="$$pids $$!"; done; \
	rc=0; $(MAKE) --no-print-directory molecule || rc=$$?; wait $$pids; \
	for t in $(BESIDE); do if [ "$$(cat reports/$$t.rc)" != 0 ]; then rc=1; \
	  echo "$$t failed (reports/$$t.log):"; \
	  grep -E '^(FAILED|ERROR) ' reports/$$t.log || tail -n 30 reports/$$t.log; fi; done; \
	exit $$rc

host-deps: $(VENV)/.installed
	@missing=""; for p in $(HOST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "host-deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; fi

# The virtualenv needs python3-venv on Debian, so apt goes first. ansible-core plus the
# five collections the roles call (collections/requirements.yml): Galaxy is not
# reachable here, so they come out of the PyPI `ansible` bundle, which is downloaded
# (54 MB) but not installed (470 MB, about fifty collections).
ANSIBLE_BUNDLE := ansible==12.3.0
$(VENV)/.installed: constraints.txt pyproject.toml collections/requirements.yml
	@dpkg-query -W -f='$${Status}\n' python3-venv 2>/dev/null | grep -q '^install ok installed' \
	  || $(PYTHON) -c 'import ensurepip' 2>/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	       --no-install-recommends python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	rm -rf $(VENV)/bundle
	$(VENV)/bin/pip download -q --disable-pip-version-check --no-deps -d $(VENV)/bundle \
	  $(ANSIBLE_BUNDLE)
	$(VENV)/bin/python collections/install_offline.py $(VENV)/bundle/ansible-*.whl
	rm -rf $(VENV)/bundle
	touch $@

lint: host-deps
	yamllint --strict .
	ansible-lint --profile production
	ruff check halab tests collections

unit: host-deps
	pytest tests/unit -q --durations=10

# argv-watch samples every process's arguments through the run (the lab's tests read
# its report); the log is kept in reports/ too, where a test looks for secrets. On
# failure the failed tasks (converge, idempotence), the failed tests and the bundles of
# the cluster's records taken for them are printed last, the failed tests' reasons
# at the very end: molecule's destroy output would bury them.
molecule: host-deps
	rm -f reports/verify.xml reports/bundles/bundles.txt
	mkdir -p reports
	HALAB_ARGV_REPORT=$(CURDIR)/reports/argv-test.json HALAB_TEST_LOG=$(CURDIR)/reports/molecule.log \
	  halab argv-watch --out reports/argv-test.json -- molecule test 2>&1 | tee reports/molecule.log \
	  || { halab failures reports/molecule.log || true; \
	  [ ! -f reports/bundles/bundles.txt ] || { echo "bundles:"; cat reports/bundles/bundles.txt; }; \
	  [ ! -f reports/verify.xml ] || halab failures reports/verify.xml || true; \
	  exit 1; }

# INVENTORY: any cluster's (Vagrant, your own machines); the lab's by default. Off the
# lab, faults go through the remote backend and need YES=1 (or ha_failover_allowed).
INVENTORY ?= inventory/lab
FAULTS ?=
YES ?=
FAILOVER_ARGS = --inventory $(INVENTORY) $(if $(FAULTS),--faults $(FAULTS)) $(if $(YES),--yes)

verify: host-deps ## the testinfra suite against a running cluster (INVENTORY=...)
	HALAB_INVENTORY=$(abspath $(INVENTORY)) HALAB_FAILOVER_YES=$(YES) pytest tests/infra \
	  -p no:cacheprovider --hosts=ansible://controllers --ansible-inventory=$(INVENTORY) -q

# Each report scenario RUNS times under each corosync token (default: corosync's own).
# PEER=keepalived: keepalived holds ha_peer_vips during the report, measured beside
# Pacemaker's public VIP, and is removed again afterwards.
RUNS ?= 3
SCENARIOS ?=
TOKENS ?= default 1000
PEER ?=
failover-report: host-deps ## failover figures: reports/failover-<time>.{json,md,png}
ifeq ($(PEER),keepalived)
	ansible-playbook -i $(INVENTORY) playbooks/peer-keepalived.yml
	rc=0; halab failover $(FAILOVER_ARGS) --peer --runs $(RUNS) \
	  $(foreach t,$(TOKENS),--token $(t)) --out reports $(SCENARIOS) || rc=$$?; \
	ansible-playbook -i $(INVENTORY) playbooks/peer-keepalived.yml \
	  -e keepalived_state=absent; exit $$rc
else ifeq ($(PEER),)
	halab failover $(FAILOVER_ARGS) --runs $(RUNS) $(foreach t,$(TOKENS),--token $(t)) \
	  --out reports $(SCENARIOS)
else
	$(error PEER must be empty or keepalived)
endif

status:
	halab status

down:
	halab down
