/* The C test programs' checks: count, report failures with file:line, and end with the line
 * "N passed, M failed" that CI reads. */
#ifndef FP_TESTS_CHECK_H
#define FP_TESTS_CHECK_H

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Atomic: tests check from several threads at once (a sender thread's CHECK while the main
 * thread's runs), and no count may be lost. */
static atomic_int passed, failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond)                                                                    \
            passed++;                                                                \
        else {                                                                       \
            failed++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_EQ(a, b)                                                                   \
    do {                                                                                 \
        long long _a = (long long)(a), _b = (long long)(b);                              \
        if (_a == _b)                                                                    \
            passed++;                                                                    \
        else {                                                                           \
            failed++;                                                                    \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld (0x%llx != 0x%llx)\n", \
                    __FILE__, __LINE__, #a, #b, _a, _b, (unsigned long long)_a,          \
                    (unsigned long long)_b);                                             \
        }                                                                                \
    } while (0)

typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case;

/* Runs the tests (only the one $FP_TEST_ONLY names, when set), saying "-- name" before each and
 * "FAILED: name" after one whose checks failed; adds to *tests_passed and *tests_failed. */
static inline void run_tests(const test_case *tests, size_t n, int *tests_passed,
                             int *tests_failed)
{
    const char *only = getenv("FP_TEST_ONLY");
    for (size_t i = 0; i < n; i++) {
        if (only && strcmp(only, tests[i].name) != 0)
            continue;
        int before = failed;
        printf("-- %s\n", tests[i].name);
        fflush(stdout);
        tests[i].fn();
        if (failed == before) {
            (*tests_passed)++;
        } else {
            (*tests_failed)++;
            printf("   FAILED: %s\n", tests[i].name);
        }
        fflush(stdout);
    }
}

/* Waits up to `ms` milliseconds for cond (an expression with no side effects it depends on)
 * to hold, looking every millisecond; the value is whether it holds. Tests order threads by
 * waiting on observable state with this, never by sleeping. */
#define WAIT_UNTIL(cond, ms)                                    \
    ({                                                          \
        int _ok = 0;                                            \
        for (int _i = 0; _i < (ms); _i++) {                     \
            if (cond) {                                         \
                _ok = 1;                                        \
                break;                                          \
            }                                                   \
            usleep(1000);                                       \
        }                                                       \
        _ok || (cond);                                          \
    })

#endif
