/*
 * A C plugin with bugs, for tests: the host must name the plugin, the
 * function and the message for each, and keep running.
 */
#include "sluice.h"

#include <stdlib.h>
#include <string.h>

/* A map that puts two values: the SDK catches it as a bug. */
static int twice(sluice_call *call, sluice_value in, sluice_writer *out) {
    sluice_put_value(out, in);
    sluice_put_value(out, in);
    return SLUICE_OK;
}

/* Where `hog` keeps what it allocates (so the compiler cannot drop it). */
static void *volatile kept;

/* Allocates until the sandbox's memory cap refuses more. */
static int hog(sluice_call *call, sluice_value in, sluice_writer *out) {
    size_t mib = 0;
    for (;;) {
        void **p = malloc(1 << 20);
        if (!p) sluice_fail("out of memory after %zu MiB", mib);
        memset(p, 1, 1 << 20);
        *p = kept;
        kept = p;
        mib++;
    }
}

/* Aborts without a word. */
static int crash(sluice_call *call, sluice_value in, sluice_writer *out) {
    abort();
}

SLUICE_PLUGIN("faulty", "0.1.0",
              SLUICE_MAP(twice, "Puts two values (a bug)."),
              SLUICE_MAP(hog, "Allocates until refused."),
              SLUICE_MAP(crash, "Aborts."));
