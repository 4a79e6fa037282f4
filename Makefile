# C core only: build and run the C test programs without Python.
#   make ctest      -Wall -Wextra -Werror, optimised
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make lib        out/libfastport.a: the C core (common, fltsim, backends, pump, driver, cref)
CC ?= cc
CFLAGS_BASE = -std=gnu11 -Wall -Wextra -Werror -pthread -Isrc -Isrc/fltsim/win32 -DFASTPORT_DEBUG=1
CFLAGS ?= -O2 -g
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CORE = $(sort $(wildcard src/common/*.c src/fltsim/*.c src/backends/*.c src/pump/*.c src/driver/*.c src/cref/*.c))
HEADERS = $(wildcard src/*/*.h src/fltsim/win32/*.h)
TESTS = $(patsubst src/tests/%.c,%,$(wildcard src/tests/test_*.c))
OUT = out
# The Windows-style test: what a C file written for Windows is compiled with here.
WIN32_TEST_FLAGS = -std=gnu11 -Wall -Wextra -Werror -pthread -Isrc/fltsim/win32 -Isrc

.PHONY: ctest asan lib clean
ctest: $(addprefix $(OUT)/,$(TESTS))
	@set -e; for t in $^; do echo "== $$t"; ./$$t; done

asan: $(addprefix $(OUT)/asan-,$(TESTS))
	@set -e; for t in $^; do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

lib: $(OUT)/libfastport.a

$(OUT)/libfastport.a: $(patsubst src/%.c,$(OUT)/obj/%.o,$(CORE))
	rm -f $@
	ar rcs $@ $^

$(OUT)/libfastport-asan.a: $(patsubst src/%.c,$(OUT)/obj-asan/%.o,$(CORE))
	rm -f $@
	ar rcs $@ $^

$(OUT)/obj/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -c -o $@ $<

$(OUT)/obj-asan/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -g $(SAN) -c -o $@ $<

# test_win32_scanner: the Win32 face only, served by scanner_kernel.c, linked against the library
$(OUT)/test_win32_scanner: src/tests/test_win32_scanner.c $(OUT)/obj/tests/scanner_kernel.o $(OUT)/libfastport.a
	$(CC) $(WIN32_TEST_FLAGS) $(CFLAGS) -o $@ $< $(OUT)/obj/tests/scanner_kernel.o $(OUT)/libfastport.a -lm

$(OUT)/asan-test_win32_scanner: src/tests/test_win32_scanner.c $(OUT)/obj-asan/tests/scanner_kernel.o $(OUT)/libfastport-asan.a
	$(CC) $(WIN32_TEST_FLAGS) -O1 -g $(SAN) -o $@ $< $(OUT)/obj-asan/tests/scanner_kernel.o $(OUT)/libfastport-asan.a -lm

$(OUT)/%: src/tests/%.c $(CORE) $(HEADERS)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -o $@ $< $(CORE) -lm

$(OUT)/asan-%: src/tests/%.c $(CORE) $(HEADERS)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) -O1 -g $(SAN) -o $@ $< $(CORE) -lm

clean:
	rm -rf $(OUT)
