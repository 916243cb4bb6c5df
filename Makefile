# Makefile - builds agentd and agentctl, runs the tests and the benchmark.
#
#   make                      development build (-Werror) into $(O)
#   make test | make check    unit + integration tests (installs deps if missing)
#   make SANITIZE=address,undefined test
#   make torture              the queue under thousands of simulated power cuts
#   make demo                 start a local broker and agentd on a demo config
#   make bench                tail -> queue -> MQTT, sampling, UDP and mqtt_sub ingest benchmarks (not tests)
#   make O=build-asan/ ...    out-of-tree build directory
#   make RELEASE=1            lenient flags (-O2, no -Werror)
#   make static TARGET=aarch64|armhf|armel|x86_64
#                             fully static musl binaries in build/static/TARGET
#   make deb TARGET=aarch64|armhf   a Debian package of them
#   make static-check         every target, sizes, tests under qemu, packages

# ---- feature switches and toolchain -------------------------------------
O        ?= build
CC       ?= cc
SANITIZE ?=
RELEASE  ?=
VERSION  ?= $(shell cat VERSION 2>/dev/null || echo 0.1.0)

CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -DAGENT_VERSION='"$(VERSION)"' -Iagent -MMD -MP
ifeq ($(RELEASE),1)
CFLAGS_DEV  = -O2 -g
else
CFLAGS_DEV  = -O2 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	      -Wmissing-prototypes -Wno-unused-parameter -Wno-missing-field-initializers -Wformat=2
endif
ifneq ($(SANITIZE),)
CFLAGS_SAN  = -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS_SAN = -fsanitize=$(SANITIZE)
endif
# TARGET_CFLAGS: added last, by the static builds (ports/static/build).
CFLAGS  += $(CFLAGS_BASE) $(CFLAGS_DEV) $(CFLAGS_SAN) $(TARGET_CFLAGS)
LDFLAGS += $(LDFLAGS_SAN)
LIBS    ?= -lmosquitto -lcurl -lsqlite3 -lzstd -lz -lmbedtls -lmbedx509 -lmbedcrypto -lm

# ---- sources ---------------------------------------------------------------
CORE_SRC = $(filter-out agent/main.c,$(wildcard agent/*.c)) $(wildcard drivers/*.c)
CORE_OBJ = $(CORE_SRC:%.c=$(O)/%.o)
TEST_SRC = $(wildcard tests/unit/test_*.c)
TESTS    = $(TEST_SRC:tests/unit/%.c=$(O)/tests/%)

all: deps $(O)/agentd $(O)/agentctl $(O)/agent-decode

# Install build dependencies when a header or library is missing.
deps:
	@tools/install-deps

$(O)/libagent.a: $(CORE_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(O)/agentd: $(O)/agent/main.o $(O)/libagent.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(O)/agentctl: $(O)/tools/agentctl.o $(O)/libagent.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(O)/agent-decode: $(O)/tools/agent-decode.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The benchmark's load generator and reference measurements (make bench).
$(O)/bench-load: $(O)/tools/bench-load.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)
$(O)/bench-udp-load: $(O)/tools/bench-udp-load.o
	$(CC) $(LDFLAGS) -o $@ $^

$(O)/tests/%: $(O)/tests/unit/%.o $(O)/libagent.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -c -o $@ $<

$(O)/tests/fuzz-regression: $(O)/tests/fuzz/fuzz_parse.o $(O)/tests/fuzz/regression.o $(O)/libagent.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The power-cut simulator (a SQLite VFS) for the queue's tests and the
# drivers' (tests/unit/input_rig.h): linked into every unit test, so that a
# driver's new test needs no rule of its own.
$(TESTS): $(O)/tests/unit/crashvfs.o

# A Modbus slave on Debian's libmodbus, for the tests only. It runs on the
# build machine, so cross builds (TARGET_CFLAGS, ports/static/build) leave it
# out, and their tests use the build machine's ($MODBUS_SERVER, set by
# ports/static/check).
ifeq ($(TARGET_CFLAGS),)
TEST_SERVERS = $(O)/tests/modbus_server
endif
$(O)/tests/modbus_server: tests/servers/modbus_server.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS_DEV) $(CFLAGS_SAN) $$(pkg-config --cflags libmodbus) -o $@ $< \
		$(LDFLAGS) $$(pkg-config --libs libmodbus)

tests: $(TESTS) $(O)/tests/fuzz-regression $(TEST_SERVERS)

# The suite runs twice: as built, then built again with AddressSanitizer
# and UndefinedBehaviorSanitizer into $(O)-san (unless SANITIZE is set).
SAN_O = $(patsubst %/,%,$(O))-san
ifeq ($(SANITIZE),)
test: all tests
	@O=$(O) tests/run-tests
	@echo "== the same suite under SANITIZE=address,undefined ($(SAN_O))"
	@$(MAKE) --no-print-directory O=$(SAN_O) SANITIZE=address,undefined test
else
test: all tests
	@O=$(O) tests/run-tests
endif

check: test

# The power-cut simulation by the thousand rounds, run by hand (not part of
# the suite): make torture [ROUNDS=2000] [SEED=1]
ROUNDS ?= 2000
SEED   ?= 1
torture: all tests
	$(O)/tests/test_powercut --torture $(ROUNDS) $(SEED)

unit: all tests
	@O=$(O) tests/run-tests unit

demo: all
	@O=$(O) tools/demo

bench: all $(O)/bench-load $(O)/bench-udp-load
	@O=$(O) tools/bench
	@O=$(O) tools/bench-sampling
	@O=$(O) tools/bench-udp
	@O=$(O) tools/bench-mqtt-sub

static:
	@ports/static/build $(TARGET)

# The package is checked too: the packaged agentd, run through qemu for
# other CPUs, must accept the packaged config.
QEMU_aarch64 = qemu-aarch64-static
QEMU_armhf   = qemu-arm-static -cpu cortex-a7
QEMU_armel   = qemu-arm-static -cpu arm1176

deb: static
	@deb=$$(ports/debian/build-deb $(TARGET)) && \
	RUN_WRAPPER="$(QEMU_$(TARGET))" ports/debian/check-deb "$$deb"

static-check: all $(TEST_SERVERS)
	@ports/static/check

docs: all
	@O=$(O) tools/gen-docs

clean:
	rm -rf $(O)

-include $(shell find $(O) -path '$(O)/static' -prune -o -type f -name '*.d' -print 2>/dev/null)

.PHONY: all deps tests test check torture unit demo bench docs static deb static-check clean
.SECONDARY:
