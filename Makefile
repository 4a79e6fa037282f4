# C core only: build and run the C test programs without Python.
#   make ctest      -Wall -Wextra -Werror, optimised
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
CC ?= cc
CFLAGS_BASE = -std=gnu11 -Wall -Wextra -Werror -pthread -Isrc -Isrc/fltsim/win32 -DFASTPORT_DEBUG=1
CFLAGS ?= -O2 -g
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CORE = $(sort $(wildcard src/common/*.c src/fltsim/*.c src/backends/*.c src/pump/*.c src/driver/*.c src/cref/*.c))
TESTS = $(patsubst src/tests/%.c,%,$(wildcard src/tests/test_*.c))
OUT = out

.PHONY: ctest asan clean
ctest: $(addprefix $(OUT)/,$(TESTS))
	@set -e; for t in $^; do echo "== $$t"; ./$$t; done

asan: $(addprefix $(OUT)/asan-,$(TESTS))
	@set -e; for t in $^; do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

$(OUT)/%: src/tests/%.c $(CORE) $(wildcard src/*/*.h)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -o $@ $< $(CORE) -lm

$(OUT)/asan-%: src/tests/%.c $(CORE) $(wildcard src/*/*.h)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) -O1 -g $(SAN) -o $@ $< $(CORE) -lm

clean:
	rm -rf $(OUT)
