# C core only: build and run the C test programs without Python.
#   make ctest      -Wall -Wextra -Werror, optimised
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan       the same tests under ThreadSanitizer (gcc; out/tsan-*)
#   make fuzz       the socket transport's frame parser under libFuzzer for FUZZ_SECONDS (clang)
#   make lib        out/libfastport.a: the C core (common, fltsim, backends, pump, driver, cref)
#   make win        the C core for Windows (mingw-w64, the REAL <windows.h> / <fltuser.h>) in
#                   out/win/: libfastport.a, and fastport-cref.exe linked against the real FltLib
#                   import library, whose import table is checked (scripts/win-imports.sh)
#   make wine       the pump's tests for Windows, run under Wine (scripts/wine-run.sh): over
#                   src/backends/fltlib.c and a fltlib test double (src/tests/win/), and
#                   test_pump.c (its fake backend) on the Win32 primitives
CC ?= cc
CFLAGS_BASE = -std=gnu11 -Wall -Wextra -Werror -pthread -Isrc -Isrc/fltsim/win32 -DFASTPORT_DEBUG=1
CFLAGS ?= -O2 -g
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CORE = $(sort $(wildcard src/common/*.c src/fltsim/*.c src/backends/*.c src/pump/*.c src/driver/*.c src/cref/*.c))
HEADERS = $(wildcard src/*/*.h src/fltsim/win32/*.h)
TESTS = $(patsubst src/tests/%.c,%,$(wildcard src/tests/test_*.c))
TSAN_TESTS ?= $(TESTS)
OUT = out
# The Windows-style test: what a C file written for Windows is compiled with here.
WIN32_TEST_FLAGS = -std=gnu11 -Wall -Wextra -Werror -pthread -Isrc/fltsim/win32 -Isrc

.PHONY: ctest asan tsan fuzz lib win wine clean
ctest: $(addprefix $(OUT)/,$(TESTS))
	@set -e; for t in $^; do echo "== $$t"; ./$$t; done

asan: $(addprefix $(OUT)/asan-,$(TESTS))
	@set -e; for t in $^; do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

# halt_on_error: a race fails the run. src/tests/tsan.supp says why each suppression is there.
TSAN = -fsanitize=thread -fno-omit-frame-pointer
TSAN_OPTIONS_RUN = halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/src/tests/tsan.supp
tsan: $(addprefix $(OUT)/tsan-,$(TSAN_TESTS))
	@set -e; for t in $^; do echo "== $$t"; TSAN_OPTIONS="$(TSAN_OPTIONS_RUN)" ./$$t; done

# libFuzzer (clang's; Debian: clang and libclang-rt-<version>-dev) on src/tests/fuzz/fuzz_frame.c:
# starts from the committed seeds (src/tests/fuzz/corpus, written by make_seeds.py) and keeps
# what it finds in out/fuzz-corpus. A crash leaves its input in out/ and fails the target.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_SRC = src/tests/fuzz/fuzz_frame.c src/fltsim/sock_frame.c src/fltsim/sock_common.c
fuzz: $(OUT)/fuzz-frame
	@mkdir -p $(OUT)/fuzz-corpus
	./$(OUT)/fuzz-frame -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	    -artifact_prefix=$(OUT)/ -print_final_stats=1 $(OUT)/fuzz-corpus src/tests/fuzz/corpus

$(OUT)/fuzz-frame: $(FUZZ_SRC) $(HEADERS)
	@mkdir -p $(OUT)
	$(FUZZ_CC) -std=gnu11 -Wall -Wextra -Werror -pthread -Isrc -g -O1 \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -o $@ $(FUZZ_SRC)

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

$(OUT)/libfastport-tsan.a: $(patsubst src/%.c,$(OUT)/obj-tsan/%.o,$(CORE))
	rm -f $@
	ar rcs $@ $^

$(OUT)/obj-tsan/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -g $(TSAN) -c -o $@ $<

$(OUT)/tsan-test_win32_scanner: src/tests/test_win32_scanner.c $(OUT)/obj-tsan/tests/scanner_kernel.o $(OUT)/libfastport-tsan.a
	$(CC) $(WIN32_TEST_FLAGS) -O1 -g $(TSAN) -o $@ $< $(OUT)/obj-tsan/tests/scanner_kernel.o $(OUT)/libfastport-tsan.a -lm

$(OUT)/tsan-%: src/tests/%.c $(CORE) $(HEADERS)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) -O1 -g $(TSAN) -o $@ $< $(CORE) -lm

$(OUT)/%: src/tests/%.c $(CORE) $(HEADERS)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -o $@ $< $(CORE) -lm

$(OUT)/asan-%: src/tests/%.c $(CORE) $(HEADERS)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_BASE) -O1 -g $(SAN) -o $@ $< $(CORE) -lm

# ---- Windows: cross-compiled, the emulator left out (it is POSIX-only)
WIN_CC = x86_64-w64-mingw32-gcc
WIN_AR = x86_64-w64-mingw32-ar
WIN_CFLAGS = -std=gnu11 -Wall -Wextra -Werror -O2 -g -Isrc -D_WIN32_WINNT=0x0A00 -DFASTPORT_DEBUG=1
WIN_SRC = src/common/histogram.c $(wildcard src/pump/*.c) src/backends/fltlib.c src/cref/cref.c
WIN_HEADERS = $(wildcard src/common/*.h src/pump/*.h src/backends/*.h src/cref/*.h src/protocols/*.h)
WIN_TEST_HEADERS = src/tests/check.h src/tests/fake_backend.h src/tests/pump_kit.h $(wildcard src/tests/win/*.h)

win: $(OUT)/win/fastport-cref.exe
	scripts/win-imports.sh $<

WINE_TESTS = $(OUT)/win/test_pump_wine.exe $(OUT)/win/test_pump.exe $(OUT)/win/test_pump_hostile.exe
wine: $(WINE_TESTS)
	scripts/wine-run.sh $^

$(OUT)/win/obj/%.o: src/%.c $(WIN_HEADERS)
	@mkdir -p $(dir $@)
	$(WIN_CC) $(WIN_CFLAGS) -c -o $@ $<

$(OUT)/win/libfastport.a: $(patsubst src/%.c,$(OUT)/win/obj/%.o,$(WIN_SRC))
	rm -f $@
	$(WIN_AR) rcs $@ $^

$(OUT)/win/fastport-cref.exe: src/win/fastport_cref.c $(OUT)/win/libfastport.a $(WIN_HEADERS)
	$(WIN_CC) $(WIN_CFLAGS) -o $@ $< $(OUT)/win/libfastport.a -lfltlib

# the pump's own suites (its fake backend) on Win32 threads, locks and condition variables
$(OUT)/win/test_pump.exe $(OUT)/win/test_pump_hostile.exe: $(OUT)/win/%.exe: src/tests/%.c \
		$(OUT)/win/libfastport.a $(WIN_HEADERS) $(WIN_TEST_HEADERS)
	$(WIN_CC) $(WIN_CFLAGS) -o $@ $< $(OUT)/win/libfastport.a

# the test double stands in for FltLib: no -lfltlib here
$(OUT)/win/test_pump_wine.exe: src/tests/win/test_pump_wine.c src/tests/win/fltlib_double.c \
		$(OUT)/win/libfastport.a $(WIN_HEADERS) $(WIN_TEST_HEADERS)
	$(WIN_CC) $(WIN_CFLAGS) -o $@ src/tests/win/test_pump_wine.c src/tests/win/fltlib_double.c \
		$(OUT)/win/libfastport.a -lntdll

clean:
	rm -rf $(OUT)
