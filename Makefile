# agentd — see README.md. `make` builds build/agentd and build/agentctl.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
SAN ?=
CC ?= cc

PKGS := libuv libcurl jansson libsystemd mount blkid libxml-2.0 zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# agentd itself is linked without libxml2: io/supervisor.c loads it on first use.
AGENTD_LIBS := $(shell pkg-config --libs $(filter-out libxml-2.0,$(PKGS)) 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 \
	-Wno-unused-parameter -Wno-missing-field-initializers
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -D_GNU_SOURCE -fno-strict-aliasing $(WARN) $(PKG_CFLAGS) -Ilib -Iagent
ifeq ($(SAN),fuzz)
CFLAGS += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -Wno-unknown-warning-option
LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRCS := $(sort $(wildcard lib/*.c))
AGENT_SRCS := $(sort $(filter-out agent/main.c agent/agentctl/%,$(wildcard agent/*.c agent/*/*.c)))
AGENTCTL_SRCS := $(sort $(wildcard agent/agentctl/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
AGENT_OBJS := $(AGENT_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all clean deps check demo demo-fleet install unit unit-build integration fuzz fuzz-build lint verify-units bench update-golden
.PHONY: deb clean-deb

all: $(BUILD)/agentd $(BUILD)/agentctl

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcommon.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libagent.a: $(AGENT_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/agentd: $(BUILD)/obj/agent/main.o $(BUILD)/libagent.a $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(AGENTD_LIBS) -lm

$(BUILD)/agentctl: $(AGENTCTL_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/libcommon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs jansson 2>/dev/null)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libagent.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libagent.a $(BUILD)/libcommon.a $(PKG_LIBS) -lcmocka -lm

unit-build: $(UNIT_BINS)

# Unit tests (cmocka), one binary per module.
unit: all $(UNIT_BINS)
	@tests/run-unit $(BUILD)

# Integration tests: the real daemon through its socket (pytest).
integration: all
	AGENTD_BUILD=$(abspath $(BUILD)) /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration

FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/libagent.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(BUILD)/libagent.a $(BUILD)/libcommon.a $(PKG_LIBS) -lm

fuzz-build: $(FUZZ_BINS)

# Bounded fuzzing of every parser (clang's libFuzzer), FUZZ_SECONDS each.
fuzz:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang SAN=fuzz fuzz-build
	@tests/fuzz/run build-fuzz $(or $(FUZZ_SECONDS),20)

lint:
	@tests/lint

verify-units:
	@tests/verify-units

# Installs every build and test dependency from Debian, skipping what is present.
deps:
	@tests/deps

# The one test command: deps, build, every test, the sanitizer run, fuzzing.
check: deps
	@tests/check

demo: deps all
	@conf/demo/run

# Three agents and a private etcd on loopback: the fleet of design.md §9.
demo-fleet: deps all
	@conf/demo-fleet/run

# The spine's figures, then each recipe family's bench script (tests/bench/bench_*.py).
bench: all
	@tests/bench/run
	@for b in tests/bench/bench_*.py; do [ -x "$$b" ] || continue; echo "== $$b"; AGENTD_BUILD=$(abspath $(BUILD)) "$$b" || exit 1; done

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/lib/systemd/system \
		$(DESTDIR)/etc/agentd $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/agentd/examples
	install -m 0755 $(BUILD)/agentd $(DESTDIR)$(PREFIX)/sbin/agentd
	install -m 0755 $(BUILD)/agentctl $(DESTDIR)$(PREFIX)/bin/agentctl
	for u in agentd.service agentd.socket agentd-shutdown.service; do \
		sed 's|/usr/local/|$(PREFIX)/|g' units/$$u > $(DESTDIR)/lib/systemd/system/$$u; \
		chmod 0644 $(DESTDIR)/lib/systemd/system/$$u; \
	done
	install -m 0644 conf/agentd.conf $(DESTDIR)$(PREFIX)/share/agentd/examples/agentd.conf
	cp -r conf/examples/. $(DESTDIR)$(PREFIX)/share/agentd/examples/
	test -e $(DESTDIR)/etc/agentd/agentd.conf || install -m 0644 conf/agentd.conf $(DESTDIR)/etc/agentd/agentd.conf
	install -m 0644 man/agentd.8 $(DESTDIR)$(PREFIX)/share/man/man8/agentd.8
	install -m 0644 man/agentctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/agentctl.1
	install -m 0644 man/agentd.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/agentd.conf.5
	install -m 0644 man/agentd-stack.5 $(DESTDIR)$(PREFIX)/share/man/man5/agentd-stack.5
	install -m 0644 conf/bash-completion/agentctl $(DESTDIR)$(PREFIX)/share/bash-completion/completions/agentctl

# The Debian package agentd_<version>_<arch>.deb (with its .buildinfo and
# .changes) in DEB_DIR, here by default, by dpkg-buildpackage and debhelper
# from debian/ (README "Install"). The binaries come from DEB_BUILD, built
# there with Debian's hardening flags (make is a no-op when it is fresh).
DEB_BUILD ?= build-deb
DEB_DIR ?= .
DEB_OUT = $(abspath $(DEB_DIR))
DEB_PVA = agentd_$(shell dpkg-parsechangelog -SVersion)_$(shell dpkg-architecture -qDEB_HOST_ARCH)
deb:
	@mkdir -p $(DEB_OUT)
	AGENTD_DEB_BUILD=$(DEB_BUILD) AGENTD_DEB_DIR=$(DEB_OUT) dpkg-buildpackage -b -us -uc \
		--buildinfo-option=-u$(DEB_OUT) --buildinfo-file=$(DEB_OUT)/$(DEB_PVA).buildinfo \
		--changes-option=-u$(DEB_OUT) --changes-file=$(DEB_OUT)/$(DEB_PVA).changes

# make clean also takes make deb's build directory and package files.
clean: clean-deb
clean-deb:
	rm -rf build-deb debian/agentd debian/.debhelper agentd_*.deb agentd_*.buildinfo agentd_*.changes

# Rewrites the golden files of rendered configs (tests/golden/) from the
# example stacks; review the diff before committing it.
update-golden: all $(BUILD)/tests/test_front
	AGENTD_UPDATE_GOLDEN=1 $(BUILD)/tests/test_front

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
