/*
 * The Sluice guest SDK for C: canonical MessagePack values and, in a
 * WebAssembly build, the `sluice:plugin` contract over the bindings that
 * `wit-bindgen c` generates (`plugin.h`, written by `sluice plugin build`).
 */
#include "sluice.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading -------------------------------------------------------------- */

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Length of the value at p[0..n) (0: malformed or truncated). */
static size_t value_len(const uint8_t *p, size_t n) {
    size_t pos = 0;
    uint64_t due = 1;
    while (due > 0) {
        if (pos >= n) return 0;
        uint8_t m = p[pos++];
        due--;
        uint64_t extra = 0, items = 0;
        int size_bytes = 0;
        if (m <= 0x7f || m >= 0xe0 || m == 0xc0 || m == 0xc2 || m == 0xc3) {
        } else if ((m & 0xf0) == 0x80) {
            items = 2 * (uint64_t)(m & 0x0f);
        } else if ((m & 0xf0) == 0x90) {
            items = m & 0x0f;
        } else if ((m & 0xe0) == 0xa0) {
            extra = m & 0x1f;
        } else {
            switch (m) {
            case 0xc4: case 0xd9: size_bytes = 1; break;
            case 0xc5: case 0xda: size_bytes = 2; break;
            case 0xc6: case 0xdb: size_bytes = 4; break;
            case 0xc7: size_bytes = 1; extra = 1; break;
            case 0xc8: size_bytes = 2; extra = 1; break;
            case 0xc9: size_bytes = 4; extra = 1; break;
            case 0xca: extra = 4; break;
            case 0xcb: extra = 8; break;
            case 0xcc: case 0xd0: extra = 1; break;
            case 0xcd: case 0xd1: extra = 2; break;
            case 0xce: case 0xd2: extra = 4; break;
            case 0xcf: case 0xd3: extra = 8; break;
            case 0xd4: extra = 2; break;
            case 0xd5: extra = 3; break;
            case 0xd6: extra = 5; break;
            case 0xd7: extra = 9; break;
            case 0xd8: extra = 17; break;
            case 0xdc: case 0xdd: case 0xde: case 0xdf: {
                int w = (m == 0xdc || m == 0xde) ? 2 : 4;
                if (n - pos < (size_t)w) return 0;
                items = be(p + pos, w) * ((m == 0xde || m == 0xdf) ? 2 : 1);
                pos += w;
                break;
            }
            default: return 0; /* 0xc1: never used */
            }
        }
        if (size_bytes) {
            if (n - pos < (size_t)size_bytes) return 0;
            extra += be(p + pos, size_bytes);
            pos += size_bytes;
        }
        if (n - pos < extra) return 0;
        pos += extra;
        due += items;
    }
    return pos;
}

sluice_type sluice_type_of(sluice_value v) {
    if (v.len == 0) return SLUICE_ABSENT;
    if (value_len(v.ptr, v.len) != v.len) return SLUICE_INVALID;
    uint8_t m = v.ptr[0];
    if (m <= 0x7f || m >= 0xe0 || (m >= 0xcc && m <= 0xd3)) return SLUICE_INT;
    if ((m & 0xf0) == 0x80 || m == 0xde || m == 0xdf) return SLUICE_MAP;
    if ((m & 0xf0) == 0x90 || m == 0xdc || m == 0xdd) return SLUICE_ARRAY;
    if ((m & 0xe0) == 0xa0 || (m >= 0xd9 && m <= 0xdb)) return SLUICE_STR;
    switch (m) {
    case 0xc0: return SLUICE_NIL;
    case 0xc2: case 0xc3: return SLUICE_BOOL;
    case 0xc4: case 0xc5: case 0xc6: return SLUICE_BIN;
    case 0xca: case 0xcb: return SLUICE_FLOAT;
    default: return SLUICE_EXT;
    }
}

const char *sluice_type_name(sluice_type t) {
    static const char *names[] = {"absent", "nil", "bool", "int", "float", "str",
                                  "bin", "array", "map", "ext", "invalid"};
    return (unsigned)t <= SLUICE_INVALID ? names[t] : "invalid";
}

bool sluice_get_bool(sluice_value v, bool *out) {
    if (v.len != 1 || (v.ptr[0] != 0xc2 && v.ptr[0] != 0xc3)) return false;
    *out = v.ptr[0] == 0xc3;
    return true;
}

bool sluice_get_int(sluice_value v, int64_t *out) {
    if (v.len == 0) return false;
    uint8_t m = v.ptr[0];
    if (m <= 0x7f) { *out = m; return v.len == 1; }
    if (m >= 0xe0) { *out = (int8_t)m; return v.len == 1; }
    int w;
    switch (m) {
    case 0xcc: case 0xd0: w = 1; break;
    case 0xcd: case 0xd1: w = 2; break;
    case 0xce: case 0xd2: w = 4; break;
    case 0xcf: case 0xd3: w = 8; break;
    default: return false;
    }
    if (v.len != (size_t)(1 + w)) return false;
    uint64_t u = be(v.ptr + 1, w);
    if (m >= 0xd0) {
        /* sign-extend from w bytes */
        int shift = 64 - 8 * w;
        *out = (int64_t)(u << shift) >> shift;
        return true;
    }
    if (u > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)u;
    return true;
}

bool sluice_get_float(sluice_value v, double *out) {
    if (v.len == 9 && v.ptr[0] == 0xcb) {
        uint64_t u = be(v.ptr + 1, 8);
        memcpy(out, &u, 8);
        return true;
    }
    if (v.len == 5 && v.ptr[0] == 0xca) {
        uint32_t u = (uint32_t)be(v.ptr + 1, 4);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return true;
    }
    int64_t i;
    if (sluice_get_int(v, &i)) {
        *out = (double)i;
        return true;
    }
    return false;
}

/* Header of a str/bin: start of the payload and its length. */
static bool payload(sluice_value v, bool str, const uint8_t **p, size_t *len) {
    if (v.len == 0) return false;
    uint8_t m = v.ptr[0];
    int w;
    if (str && (m & 0xe0) == 0xa0) {
        *p = v.ptr + 1;
        *len = m & 0x1f;
        return v.len == 1 + *len;
    }
    if (m == (str ? 0xd9 : 0xc4)) w = 1;
    else if (m == (str ? 0xda : 0xc5)) w = 2;
    else if (m == (str ? 0xdb : 0xc6)) w = 4;
    else return false;
    if (v.len < (size_t)(1 + w)) return false;
    *len = (size_t)be(v.ptr + 1, w);
    *p = v.ptr + 1 + w;
    return v.len == 1 + (size_t)w + *len;
}

bool sluice_get_str(sluice_value v, const char **str, size_t *len) {
    const uint8_t *p;
    if (!payload(v, true, &p, len)) return false;
    *str = (const char *)p;
    return true;
}

bool sluice_get_bin(sluice_value v, const uint8_t **bytes, size_t *len) {
    return payload(v, false, bytes, len);
}

bool sluice_str_eq(sluice_value v, const char *s) {
    const char *p;
    size_t n;
    return sluice_get_str(v, &p, &n) && strlen(s) == n && memcmp(p, s, n) == 0;
}

/* Count and first item of an array (map: entries, and items = 2 × entries). */
static bool container(sluice_value v, bool map, size_t *count, size_t *first) {
    if (v.len == 0) return false;
    uint8_t m = v.ptr[0];
    if ((m & 0xf0) == (map ? 0x80 : 0x90)) {
        *count = m & 0x0f;
        *first = 1;
    } else if (m == (map ? 0xde : 0xdc) && v.len >= 3) {
        *count = (size_t)be(v.ptr + 1, 2);
        *first = 3;
    } else if (m == (map ? 0xdf : 0xdd) && v.len >= 5) {
        *count = (size_t)be(v.ptr + 1, 4);
        *first = 5;
    } else {
        return false;
    }
    return true;
}

size_t sluice_len(sluice_value v) {
    size_t count, first;
    if (container(v, false, &count, &first) || container(v, true, &count, &first)) return count;
    return 0;
}

/* The item at `pos` of `v`, advancing `pos` past it. */
static sluice_value next_item(sluice_value v, size_t *pos) {
    sluice_value item = {NULL, 0};
    if (*pos >= v.len) return item;
    size_t n = value_len(v.ptr + *pos, v.len - *pos);
    item.ptr = v.ptr + *pos;
    item.len = n;
    *pos += n;
    return item;
}

sluice_value sluice_at(sluice_value array, size_t i) {
    sluice_value none = {NULL, 0};
    size_t count, pos;
    if (!container(array, false, &count, &pos) || i >= count) return none;
    for (size_t k = 0; k < i; k++) {
        if (next_item(array, &pos).len == 0) return none;
    }
    return next_item(array, &pos);
}

bool sluice_entry(sluice_value map, size_t i, sluice_value *key, sluice_value *value) {
    size_t count, pos;
    if (!container(map, true, &count, &pos) || i >= count) return false;
    for (size_t k = 0; k < 2 * i; k++) {
        if (next_item(map, &pos).len == 0) return false;
    }
    *key = next_item(map, &pos);
    *value = next_item(map, &pos);
    return key->len > 0 && value->len > 0;
}

sluice_value sluice_get(sluice_value map, const char *key) {
    sluice_value none = {NULL, 0};
    size_t count, pos;
    if (!container(map, true, &count, &pos)) return none;
    for (size_t k = 0; k < count; k++) {
        sluice_value kv = next_item(map, &pos);
        sluice_value vv = next_item(map, &pos);
        if (kv.len == 0 || vv.len == 0) return none;
        if (sluice_str_eq(kv, key)) return vv;
    }
    return none;
}

bool sluice_equal(sluice_value a, sluice_value b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

sluice_value sluice_values_at(const sluice_values *values, size_t i) {
    sluice_value v = {NULL, 0};
    if (i < values->count) {
        v.ptr = values->bytes + values->offsets[i];
        v.len = values->offsets[i + 1] - values->offsets[i];
    }
    return v;
}

/* ---- writing -------------------------------------------------------------- */

static void *grow(void *p, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    p = realloc(p, c * item);
    if (!p) sluice_fail("out of memory (%zu bytes)", c * item);
    *cap = c;
    return p;
}

static void push_offset(sluice_writer *w) {
    w->offsets = grow(w->offsets, &w->offsets_cap, w->count + 2, sizeof(uint32_t));
    if (w->count == 0) w->offsets[0] = 0;
    if (w->len > UINT32_MAX) sluice_fail("a column of over 4 GiB");
    w->offsets[++w->count] = (uint32_t)w->len;
}

/* One item completed: closes finished containers; a top-level value is an element. */
static void item_done(sluice_writer *w) {
    while (w->depth > 0) {
        if (--w->open[w->depth - 1] > 0) return;
        w->depth--;
    }
    push_offset(w);
}

static void put_bytes(sluice_writer *w, const void *p, size_t n) {
    w->bytes = grow(w->bytes, &w->cap, w->len + n, 1);
    memcpy(w->bytes + w->len, p, n);
    w->len += n;
}

static void put_byte(sluice_writer *w, uint8_t b) { put_bytes(w, &b, 1); }

static void put_be(sluice_writer *w, uint8_t marker, uint64_t v, int n) {
    uint8_t buf[9];
    buf[0] = marker;
    for (int i = 0; i < n; i++) buf[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    put_bytes(w, buf, 1 + n);
}

void sluice_writer_free(sluice_writer *w) {
    free(w->bytes);
    free(w->offsets);
    memset(w, 0, sizeof *w);
}

sluice_value sluice_written(const sluice_writer *w, size_t i) {
    sluice_values all = {w->bytes, w->offsets, w->count};
    return sluice_values_at(&all, i);
}

void sluice_put_nil(sluice_writer *w) {
    put_byte(w, 0xc0);
    item_done(w);
}

void sluice_put_bool(sluice_writer *w, bool b) {
    put_byte(w, b ? 0xc3 : 0xc2);
    item_done(w);
}

void sluice_put_uint(sluice_writer *w, uint64_t u) {
    if (u < 0x80) put_byte(w, (uint8_t)u);
    else if (u < 0x100) put_be(w, 0xcc, u, 1);
    else if (u < 0x10000) put_be(w, 0xcd, u, 2);
    else if (u < 0x100000000ull) put_be(w, 0xce, u, 4);
    else put_be(w, 0xcf, u, 8);
    item_done(w);
}

void sluice_put_int(sluice_writer *w, int64_t i) {
    if (i >= 0) {
        sluice_put_uint(w, (uint64_t)i);
        return;
    }
    if (i >= -32) put_byte(w, (uint8_t)i);
    else if (i >= -0x80) put_be(w, 0xd0, (uint64_t)i, 1);
    else if (i >= -0x8000) put_be(w, 0xd1, (uint64_t)i, 2);
    else if (i >= -0x80000000ll) put_be(w, 0xd2, (uint64_t)i, 4);
    else put_be(w, 0xd3, (uint64_t)i, 8);
    item_done(w);
}

void sluice_put_float(sluice_writer *w, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    put_be(w, 0xcb, u, 8);
    item_done(w);
}

static void put_header(sluice_writer *w, size_t n, uint8_t fix, uint8_t fix_limit,
                       uint8_t m8, uint8_t m16, uint8_t m32) {
    if (fix && n < fix_limit) put_byte(w, (uint8_t)(fix | n));
    else if (m8 && n < 0x100) put_be(w, m8, n, 1);
    else if (n < 0x10000) put_be(w, m16, n, 2);
    else put_be(w, m32, n, 4);
}

void sluice_put_strn(sluice_writer *w, const char *s, size_t len) {
    put_header(w, len, 0xa0, 32, 0xd9, 0xda, 0xdb);
    put_bytes(w, s, len);
    item_done(w);
}

void sluice_put_str(sluice_writer *w, const char *s) { sluice_put_strn(w, s, strlen(s)); }

void sluice_put_bin(sluice_writer *w, const uint8_t *bytes, size_t len) {
    put_header(w, len, 0, 0, 0xc4, 0xc5, 0xc6);
    put_bytes(w, bytes, len);
    item_done(w);
}

static void open_container(sluice_writer *w, uint32_t items) {
    if (items == 0) {
        item_done(w);
        return;
    }
    if (w->depth == (int)(sizeof w->open / sizeof w->open[0]))
        sluice_fail("values nested over 64 deep");
    w->open[w->depth++] = items;
}

void sluice_put_array(sluice_writer *w, uint32_t n) {
    put_header(w, n, 0x90, 16, 0, 0xdc, 0xdd);
    open_container(w, n);
}

void sluice_put_map(sluice_writer *w, uint32_t n) {
    put_header(w, n, 0x80, 16, 0, 0xde, 0xdf);
    if (n > UINT32_MAX / 2) sluice_fail("a map of %u entries", n);
    open_container(w, 2 * n);
}

void sluice_put_value(sluice_writer *w, sluice_value v) {
    if (v.len == 0) sluice_fail("put an absent value");
    put_bytes(w, v.ptr, v.len);
    item_done(w);
}

/* ---- calls ---------------------------------------------------------------- */

static char *vformat(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(NULL, 0, format, args);
    char *s = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (!s) abort();
    vsnprintf(s, n > 0 ? (size_t)n + 1 : 1, format, again);
    va_end(again);
    return s;
}

int sluice_refuse(sluice_call *call, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *message = vformat(format, args);
    va_end(args);
    if (call) {
        free(call->refusal);
        call->refusal = message;
    } else {
        free(message);
    }
    return SLUICE_REFUSED;
}

bool sluice_state_exists(const sluice_state *state) {
    return !state->removed && (state->update.count > 0 || state->value.len > 0);
}

sluice_writer *sluice_state_update(sluice_state *state) {
    state->update.len = 0;
    state->update.count = 0;
    state->update.depth = 0;
    state->removed = false;
    return &state->update;
}

void sluice_state_remove(sluice_state *state) {
    state->update.len = 0;
    state->update.count = 0;
    state->update.depth = 0;
    state->removed = true;
}

static void log_line(sluice_level level, const char *message, size_t len);

void sluice_log(sluice_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *message = vformat(format, args);
    va_end(args);
    log_line(level, message, strlen(message));
    free(message);
}

void sluice_fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *message = vformat(format, args);
    va_end(args);
    log_line(SLUICE_ERROR, message, strlen(message));
    abort();
}

#ifndef __wasm__

/* Native builds (unit tests): log lines go to stderr. */
static void log_line(sluice_level level, const char *message, size_t len) {
    static const char *names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
    fprintf(stderr, "%s %.*s\n", names[level <= SLUICE_ERROR ? level : SLUICE_ERROR],
            (int)len, message);
}

#else

/* ---- the plugin contract (WebAssembly builds) ------------------------------ */

#include "plugin.h"

typedef exports_sluice_plugin_operator_call_output_t output_t;
typedef exports_sluice_plugin_operator_plugin_error_t error_t_;

static void log_line(sluice_level level, const char *message, size_t len) {
    plugin_string_t s = {(uint8_t *)message, len};
    sluice_plugin_host_log((sluice_plugin_host_log_level_t)level, &s);
}

void exports_sluice_plugin_operator_describe(exports_sluice_plugin_operator_plugin_info_t *ret) {
    const sluice_plugin *p = &sluice_plugin_definition;
    plugin_string_dup(&ret->name, p->name);
    plugin_string_dup(&ret->version, p->version);
    plugin_string_dup(&ret->sdk, "sluice-sdk-c " SLUICE_SDK_VERSION);
    ret->functions.len = p->count;
    ret->functions.ptr = calloc(p->count ? p->count : 1, sizeof *ret->functions.ptr);
    if (!ret->functions.ptr) abort();
    for (size_t i = 0; i < p->count; i++) {
        plugin_string_dup(&ret->functions.ptr[i].name, p->functions[i].name);
        plugin_string_dup(&ret->functions.ptr[i].doc, p->functions[i].doc ? p->functions[i].doc : "");
        ret->functions.ptr[i].kind = (sluice_plugin_types_function_kind_t)p->functions[i].kind;
    }
}

static sluice_values column(const sluice_plugin_types_column_t *c) {
    sluice_values v = {c->bytes.ptr, c->offsets.ptr, c->offsets.len ? c->offsets.len - 1 : 0};
    return v;
}

/* A column as the host gave it: well-formed offsets, or a bug in the host. */
static void check_column(const sluice_values *c, size_t bytes, const char *what) {
    if (c->count == 0) return;
    if (c->offsets[0] != 0 || c->offsets[c->count] != bytes)
        sluice_fail("malformed %s column from the host", what);
    for (size_t i = 0; i < c->count; i++) {
        if (c->offsets[i] > c->offsets[i + 1]) sluice_fail("malformed %s column from the host", what);
    }
}

/* Moves a writer's buffers into a column of the call's output. */
static sluice_plugin_types_column_t take(sluice_writer *w) {
    sluice_plugin_types_column_t c;
    c.bytes.ptr = w->bytes;
    c.bytes.len = w->len;
    if (w->count == 0) {
        free(w->offsets);
        c.offsets.ptr = NULL;
        c.offsets.len = 0;
    } else {
        c.offsets.ptr = w->offsets;
        c.offsets.len = w->count + 1;
    }
    memset(w, 0, sizeof *w);
    return c;
}

static void reset(sluice_writer *w) {
    w->len = 0;
    w->count = 0;
    w->depth = 0;
}

/* The element absent: an empty range. */
static void put_absent(sluice_writer *w) { push_offset(w); }

typedef struct failure {
    sluice_plugin_types_error_kind_t kind;
    char *message;
    bool has_element;
    uint32_t element;
} failure;

static bool fail_with(failure *f, sluice_plugin_types_error_kind_t kind, bool has_element,
                      uint32_t element, char *message) {
    f->kind = kind;
    f->message = message;
    f->has_element = has_element;
    f->element = element;
    return false;
}

static char *dup_message(const char *format, ...) __attribute__((format(printf, 1, 2)));
static char *dup_message(const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *m = vformat(format, args);
    va_end(args);
    return m;
}

/* A refusal of element `i` (or of the whole call). */
static bool refused(failure *f, sluice_call *call, bool has_element, uint32_t i,
                    sluice_plugin_types_error_kind_t kind) {
    char *m = call->refusal ? call->refusal : dup_message("refused");
    call->refusal = NULL;
    return fail_with(f, kind, has_element, i, m);
}

/* A function that put the wrong number of values is a bug in it. */
static void expect_puts(const sluice_function *fn, sluice_writer *out, size_t before,
                        size_t at_most, bool exactly, size_t i) {
    size_t put = out->count - before;
    if (out->depth != 0)
        sluice_fail("`%s` left an array or map unfinished (element %zu)", fn->name, i);
    if (put > at_most || (exactly && put != at_most))
        sluice_fail("`%s` put %zu values for element %zu (a %s puts %s one)", fn->name, put, i,
                    fn->kind == SLUICE_KIND_MAP ? "map" : "function of its kind",
                    exactly ? "exactly" : "at most");
}

/* Keyed elements as [key, value] arrays. */
static sluice_values pairs(const sluice_values *keys, const sluice_values *values,
                           sluice_writer *scratch) {
    for (size_t i = 0; i < values->count; i++) {
        sluice_put_array(scratch, 2);
        sluice_put_value(scratch, sluice_values_at(keys, i));
        sluice_put_value(scratch, sluice_values_at(values, i));
    }
    sluice_values v = {scratch->bytes, scratch->offsets, scratch->count};
    return v;
}

static bool run(const sluice_function *fn, sluice_call *call,
                exports_sluice_plugin_operator_call_input_t *input, output_t *ret, failure *f) {
    sluice_values keys = column(&input->primary.keys);
    sluice_values values = column(&input->primary.values);
    sluice_values secondary = column(&input->secondary);
    check_column(&keys, input->primary.keys.bytes.len, "keys");
    check_column(&values, input->primary.values.bytes.len, "values");
    check_column(&secondary, input->secondary.bytes.len, "secondary");
    const uint32_t *groups = input->groups.ptr;
    size_t ngroups = input->groups.len ? input->groups.len - 1 : 0;
    if (keys.count && keys.count != values.count)
        return fail_with(f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, false, 0,
                         dup_message("%zu keys for %zu values", keys.count, values.count));
    for (size_t g = 0; g < ngroups; g++) {
        if (groups[g] > groups[g + 1] || groups[g + 1] > values.count)
            return fail_with(f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, false, 0,
                             dup_message("group %zu out of range (%u..%u of %zu)", g, groups[g],
                                         groups[g + 1], values.count));
    }
    sluice_writer out = SLUICE_WRITER_INIT, out_keys = SLUICE_WRITER_INIT;
    sluice_writer scratch = SLUICE_WRITER_INIT;
    bool ok = true;
    /* Elements as filter, map-partitions, transform and sink see them:
     * [key, value] when keyed. */
    sluice_values elements = values;
    bool whole = fn->kind == SLUICE_KIND_FILTER || fn->kind == SLUICE_KIND_MAP_PARTITIONS ||
                 fn->kind == SLUICE_KIND_TRANSFORM || fn->kind == SLUICE_KIND_SINK;
    if (keys.count && whole) elements = pairs(&keys, &values, &scratch);

    switch (fn->kind) {
    case SLUICE_KIND_MAP:
    case SLUICE_KIND_FLAT_MAP: {
        bool exactly = fn->kind == SLUICE_KIND_MAP;
        const sluice_values *seen = &values;
        for (size_t i = 0; i < seen->count && ok; i++) {
            size_t before = out.count;
            if (fn->fn.map(call, sluice_values_at(seen, i), &out) != SLUICE_OK) {
                ok = refused(f, call, true, (uint32_t)i, SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
                break;
            }
            expect_puts(fn, &out, before, exactly ? 1 : SIZE_MAX, exactly, i);
            if (keys.count) {
                for (size_t k = before; k < out.count; k++) sluice_put_value(&out_keys, sluice_values_at(&keys, i));
            }
        }
        break;
    }
    case SLUICE_KIND_FILTER: {
        uint32_t *kept = malloc((elements.count ? elements.count : 1) * sizeof *kept);
        if (!kept) abort();
        size_t n = 0;
        for (size_t i = 0; i < elements.count; i++) {
            bool keep = false;
            if (fn->fn.filter(call, sluice_values_at(&elements, i), &keep) != SLUICE_OK) {
                free(kept);
                ok = refused(f, call, true, (uint32_t)i, SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
                break;
            }
            if (keep) kept[n++] = (uint32_t)i;
        }
        if (ok) {
            ret->tag = SLUICE_PLUGIN_TYPES_CALL_OUTPUT_SELECTION;
            ret->val.selection.ptr = kept;
            ret->val.selection.len = n;
        }
        sluice_writer_free(&scratch);
        return ok;
    }
    case SLUICE_KIND_MAP_PARTITIONS:
    case SLUICE_KIND_TRANSFORM: {
        int r;
        if (fn->pair) {
            r = fn->fn.batch2(call, &elements, &secondary, &out);
        } else {
            r = fn->fn.batch(call, &elements, &out);
        }
        if (out.depth != 0) sluice_fail("`%s` left an array or map unfinished", fn->name);
        if (r != SLUICE_OK) ok = refused(f, call, false, 0, SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
        break;
    }
    case SLUICE_KIND_SINK:
        if (fn->fn.sink(call, &elements) != SLUICE_OK)
            ok = refused(f, call, false, 0, SLUICE_PLUGIN_TYPES_ERROR_KIND_FAILED);
        sluice_writer_free(&scratch);
        if (ok) ret->tag = SLUICE_PLUGIN_TYPES_CALL_OUTPUT_NONE;
        return ok;
    case SLUICE_KIND_REDUCE: {
        sluice_writer acc[2] = {SLUICE_WRITER_INIT, SLUICE_WRITER_INIT};
        for (size_t g = 0; g < ngroups && ok; g++) {
            if (groups[g] >= groups[g + 1]) {
                ok = fail_with(f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, false, 0,
                               dup_message("group %zu is empty", g));
                break;
            }
            sluice_value a = sluice_values_at(&values, groups[g]);
            for (uint32_t i = groups[g] + 1; i < groups[g + 1]; i++) {
                sluice_writer *next = &acc[i & 1];
                reset(next);
                if (fn->fn.reduce(call, a, sluice_values_at(&values, i), next) != SLUICE_OK) {
                    ok = refused(f, call, true, i, SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
                    break;
                }
                expect_puts(fn, next, 0, 1, true, i);
                a = sluice_written(next, 0);
            }
            if (ok) sluice_put_value(&out, a);
        }
        sluice_writer_free(&acc[0]);
        sluice_writer_free(&acc[1]);
        break;
    }
    case SLUICE_KIND_INVERSE_REDUCE:
        if (secondary.count != values.count) {
            ok = fail_with(f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, false, 0,
                           dup_message("inverse-reduce needs one value to remove per element"));
            break;
        }
        for (size_t i = 0; i < values.count; i++) {
            size_t before = out.count;
            if (fn->fn.reduce(call, sluice_values_at(&values, i), sluice_values_at(&secondary, i),
                              &out) != SLUICE_OK) {
                ok = refused(f, call, true, (uint32_t)i, SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
                break;
            }
            expect_puts(fn, &out, before, 1, true, i);
        }
        break;
    case SLUICE_KIND_UPDATE_STATE:
        for (size_t g = 0; g < ngroups; g++) {
            sluice_values news = {values.bytes, values.offsets ? values.offsets + groups[g] : NULL,
                                  groups[g + 1] - groups[g]};
            sluice_value state = sluice_values_at(&secondary, g);
            size_t before = out.count;
            if (fn->fn.update_state(call, &news, state, &out) != SLUICE_OK) {
                ok = refused(f, call, groups[g] < groups[g + 1], groups[g],
                             SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
                break;
            }
            expect_puts(fn, &out, before, 1, false, groups[g]);
            if (out.count == before) put_absent(&out);
        }
        break;
    case SLUICE_KIND_MAP_STATE: {
        if (secondary.count != ngroups || keys.count != values.count) {
            ok = fail_with(f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, false, 0,
                           dup_message("%zu groups, %zu states, %zu keys, %zu values", ngroups,
                                       secondary.count, keys.count, values.count));
            break;
        }
        sluice_writer finals = SLUICE_WRITER_INIT, current = SLUICE_WRITER_INIT;
        for (size_t g = 0; g < ngroups && ok; g++) {
            sluice_state st;
            memset(&st, 0, sizeof st);
            st.value = sluice_values_at(&secondary, g);
            for (uint32_t i = groups[g]; i < groups[g + 1]; i++) {
                sluice_value v = sluice_values_at(&values, i);
                if (v.len == 0) st.timing_out = true;
                size_t before = out.count;
                if (fn->fn.map_state(call, sluice_values_at(&keys, i), v, &st, &out) != SLUICE_OK) {
                    ok = refused(f, call, true, i, SLUICE_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT);
                    break;
                }
                expect_puts(fn, &out, before, 1, false, i);
                if (out.count == before) put_absent(&out);
                if (st.update.depth != 0 || st.update.count > 1)
                    sluice_fail("`%s` updated the state with %zu values (element %u)", fn->name,
                                st.update.count, i);
                if (st.removed) {
                    st.value.len = 0;
                } else if (st.update.count == 1) {
                    reset(&current);
                    sluice_put_value(&current, sluice_written(&st.update, 0));
                    st.value = sluice_written(&current, 0);
                    reset(&st.update);
                }
            }
            if (st.timing_out || st.value.len == 0) put_absent(&finals);
            else sluice_put_value(&finals, st.value);
            sluice_writer_free(&st.update);
        }
        if (ok) {
            for (size_t g = 0; g < finals.count; g++) {
                sluice_value s = sluice_written(&finals, g);
                if (s.len == 0) put_absent(&out);
                else sluice_put_value(&out, s);
            }
        }
        sluice_writer_free(&finals);
        sluice_writer_free(&current);
        break;
    }
    default:
        ok = fail_with(f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, false, 0,
                       dup_message("function kind %d is not supported by sluice-sdk-c", fn->kind));
    }
    sluice_writer_free(&scratch);
    if (!ok) {
        sluice_writer_free(&out);
        sluice_writer_free(&out_keys);
        return false;
    }
    ret->tag = SLUICE_PLUGIN_TYPES_CALL_OUTPUT_BATCH;
    ret->val.batch.keys = take(&out_keys);
    ret->val.batch.values = take(&out);
    return true;
}

bool exports_sluice_plugin_operator_invoke(uint32_t function,
                                           exports_sluice_plugin_operator_call_context_t *context,
                                           exports_sluice_plugin_operator_call_input_t *input,
                                           output_t *ret, error_t_ *err) {
    const sluice_plugin *p = &sluice_plugin_definition;
    failure f = {0};
    bool ok;
    if (function >= p->count) {
        ok = fail_with(&f, SLUICE_PLUGIN_TYPES_ERROR_KIND_UNKNOWN_FUNCTION, false, 0,
                       dup_message("no function %u: the plugin has %zu functions", function, p->count));
    } else {
        sluice_call call = {context->batch_time_ms, context->partition, context->partitions,
                            context->attempt, NULL};
        ok = run(&p->functions[function], &call, input, ret, &f);
        free(call.refusal);
    }
    exports_sluice_plugin_operator_call_input_free(input);
    if (!ok) {
        err->kind = f.kind;
        err->message.ptr = (uint8_t *)f.message;
        err->message.len = strlen(f.message);
        err->element.is_some = f.has_element;
        err->element.val = f.element;
    }
    return ok;
}

#endif
