# sudo make lab    install what is needed, build the two-host lab and prove it
# sudo make test   install what is needed and run the whole test suite
# sudo make lab-down   remove the lab
# sudo make vagrant-test   boot the Vagrant lab offline (two VMs), prove it, remove it
# sudo make vagrant-box    only build (or find cached) the offline box
# sudo make vagrant-clean  remove what an interrupted vagrant-test left

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := openvswitch-switch iproute2 iputils-ping iputils-arping ethtool nftables iptables \
	tcpdump ruby python3 python3-venv
VAGRANT_PACKAGES := vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils \
	debootstrap extlinux syslinux-common fdisk dnsmasq-base rsync iptables tini

.PHONY: deps lab lab-down test lint vagrant-deps vagrant-box vagrant-test vagrant-clean

deps: $(BIN)/ovsnvgre

$(BIN)/ovsnvgre: pyproject.toml
	@if command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			$(DEBIAN_PACKAGES); \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lab: deps
	$(BIN)/ovsnvgre lab up
	$(BIN)/ovsnvgre lab check

lab-down: deps
	$(BIN)/ovsnvgre lab down

lint: deps
	$(BIN)/ruff check .

test: deps lint
	$(BIN)/python -m pytest -v

vagrant-deps: deps
	@if command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			$(VAGRANT_PACKAGES); \
	fi

vagrant-box: vagrant-deps
	vagrant/build-box.sh

vagrant-test: vagrant-deps
	PYTHON=$(BIN)/python vagrant/test.sh

vagrant-clean:
	vagrant/host.sh clean
