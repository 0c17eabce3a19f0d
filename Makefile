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

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CPPFLAGS = -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-sign-compare \
	-Wno-cast-function-type -I$(srcdir)/src -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)
SHLIB_LINK = -lzstd -lcrypto

EXTRA_CLEAN = regress.conf tmp_check results regression.diffs regression.out

include $(PGXS)

# after the include: Makefile.global resets PROVE_FLAGS
PROVE_FLAGS = -I $(CURDIR)/test/lib

# Every object depends on every private header: there are few and they change
# together.
$(OBJS): $(wildcard src/*.h src/*/*.h)

regress.conf: test/regress.conf.in
	cp $< $@
	if $(shell $(PG_CONFIG) --bindir)/postgres --describe-config 2>/dev/null | \
		grep -q '^output_plugin_libraries'; then \
		echo "output_plugin_libraries = 'pgoutput, test_decoding, data_embassy'" >> $@; \
	fi

installcheck: regress.conf
