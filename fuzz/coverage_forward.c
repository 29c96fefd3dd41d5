/* Hand atheris' coverage back to its libFuzzer when gcc's AddressSanitizer is preloaded.
 *
 * scripts/fuzz.sh --sanitize runs the fuzz targets against corral._speedups built with gcc's
 * -fsanitize=address,undefined, which needs libasan in LD_PRELOAD. libasan defines weak,
 * do-nothing versions of the sanitizer-coverage entry points (__sanitizer_cov_*), and a
 * preloaded library comes first in symbol lookup, so the calls atheris' core makes to register
 * its Python coverage counters land in libasan instead of the libFuzzer linked into atheris:
 * the fuzzer then runs blind ("Is the code instrumented for coverage?"). atheris documents
 * the same clash for clang and ships libasan+libFuzzer preloads for it; gcc has none.
 *
 * This library goes first in LD_PRELOAD (ASAN_OPTIONS=verify_asan_link_order=0; it defines
 * no allocator function, so malloc and free still resolve to libasan) and defines those
 * entry points strongly: each call is forwarded to the definition inside atheris' core
 * module, found among the loaded objects on first use. Only the entry points atheris calls
 * are covered; the C extension itself carries no coverage instrumentation (gcc cannot emit
 * libFuzzer's inline 8-bit counters), so its branches are reached through the pure twin's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *core;
static unsigned long searches;

static int
find_core(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    if (info->dlpi_name != NULL && strstr(info->dlpi_name, "atheris/core_with_libfuzzer")) {
        core = dlopen(info->dlpi_name, RTLD_NOW | RTLD_NOLOAD);
        return 1;
    }
    return 0;
}

/* The definition of `name` inside atheris' core module, or NULL while that module is not
 * loaded (libasan's memcmp interceptor calls the hook from the start; the core is searched
 * for on one call in 1024 until it is there). */
static void *
lookup(const char *name)
{
    if (core == NULL) {
        if (searches++ % 1024 != 0)
            return NULL;
        dl_iterate_phdr(find_core, NULL);
        if (core == NULL)
            return NULL;
    }
    return dlsym(core, name);
}

/* Coverage registration happens once the core is loaded: a miss there would leave the
 * fuzzer without coverage for the whole run, so it aborts instead. */
static void *
required(const char *name)
{
    void *fn;
    searches = 0;
    fn = lookup(name);
    if (fn == NULL) {
        fprintf(stderr, "coverage_forward: no %s in atheris' core module\n", name);
        abort();
    }
    return fn;
}

#define FORWARD(find, name, params, args)                                                  \
    void name params                                                                       \
    {                                                                                      \
        static void (*target) params;                                                      \
        if (target == NULL)                                                                \
            target = (void (*) params)find(#name);                                         \
        if (target != NULL)                                                                \
            target args;                                                                   \
    }

FORWARD(required, __sanitizer_cov_8bit_counters_init, (uint8_t *start, uint8_t *stop),
        (start, stop))
FORWARD(required, __sanitizer_cov_pcs_init, (const uintptr_t *start, const uintptr_t *stop),
        (start, stop))
FORWARD(required, __sanitizer_cov_trace_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(required, __sanitizer_cov_trace_const_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(lookup, __sanitizer_weak_hook_memcmp,
        (void *pc, const void *a, const void *b, size_t n, int result), (pc, a, b, n, result))
