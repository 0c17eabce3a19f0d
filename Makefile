# Makefile for data_embassy (PGXS)
#
# make                 build data_embassy.so
# make install         install it into the server given by PG_CONFIG
# make installcheck    pg_regress suite on a temporary instance, then the
#                      TAP suite under test/ (two or more clusters)
#
# scripts/test.sh wraps all of this for a fresh Debian 12 machine.

EXTENSION = data_embassy
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
MODULE_big = data_embassy
# src/ holds the module entry; src/seal/ the frame format and its
# cryptography, src/register/ the register side, src/embassy/ the embassy side.
SRCS = $(sort $(wildcard src/*.c src/*/*.c))
OBJS = $(patsubst %.c,%.o,$(SRCS))
DATA = $(EXTENSION)--$(EXTVERSION).sql
PGFILEDESC = "data_embassy - sealed logical replication to a data embassy"

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)

# pg_regress: a temporary instance with our library preloaded and logical
# WAL; regress.conf is generated because output_plugin_libraries exists only
# from 15.19 on and an unknown setting would stop the server.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-config=regress.conf --temp-instance=./tmp_check \
	--load-extension=$(EXTENSION)

# pg_isolation_regress: specs/*.spec against expected/*.out, on a temporary
# instance configured as the regress suite's (its own directory: the TAP
# suite logs under tmp_check).  installcheck runs them after the regress
# suite and before the TAP suite.
ISOLATION = keys_generate add_register_race drop_pause_race promote_race
ISOLATION_OPTS = --temp-config=regress.conf --temp-instance=./tmp_check_iso \
	--load-extension=$(EXTENSION)

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CPPFLAGS = -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-sign-compare \
	-Wno-cast-function-type -I$(srcdir)/src -I$(libpq_srcdir)
# The developer build only warns; scripts/test.sh (the CI command) builds
# with PG_CFLAGS=-Werror, so a warning fails the test run.
SHLIB_LINK_INTERNAL = $(libpq)
SHLIB_LINK = -lzstd -lcrypto

EXTRA_CLEAN = regress.conf tmp_check tmp_check_iso results output_iso \
	regression.diffs regression.out .cflags

include $(PGXS)

# after the include: Makefile.global resets PROVE_FLAGS
PROVE_FLAGS = -I $(CURDIR)/test/lib

# Every object depends on every private header: there are few and they change
# together.
$(OBJS): $(wildcard src/*.h src/*/*.h)

# Objects are rebuilt when PG_CFLAGS changes, so that "make PG_CFLAGS=-Werror"
# after a warning-only build checks every file.
.cflags: FORCE
	@echo '$(PG_CFLAGS)' | cmp -s - $@ || echo '$(PG_CFLAGS)' > $@
$(OBJS): .cflags
.PHONY: FORCE
FORCE:

# One version source: the control file's default_version
# (scripts/check_meta.pl says what META.json must say; scripts/test.sh runs
# this check).
check-meta:
	perl $(srcdir)/scripts/check_meta.pl $(srcdir)/$(EXTENSION).control $(srcdir)/META.json
.PHONY: check-meta

regress.conf: test/regress.conf.in
	cp $< $@
	if $(shell $(PG_CONFIG) --bindir)/postgres --describe-config 2>/dev/null | \
		grep -q '^output_plugin_libraries'; then \
		echo "output_plugin_libraries = 'pgoutput, test_decoding, data_embassy'" >> $@; \
	fi

installcheck: regress.conf
