/* Unit tests of the C SDK's values, compiled natively:
 * `cc -std=c11 -Wall -Wextra -o test_sluice test_sluice.c sluice.c && ./test_sluice`. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

/* The last element written to `w` equals the bytes `want[0..n)`. */
static void expect(const sluice_writer *w, const char *what, const uint8_t *want, size_t n) {
    sluice_value v = sluice_written(w, w->count - 1);
    if (v.len != n || memcmp(v.ptr, want, n) != 0) {
        fprintf(stderr, "%s: got", what);
        for (size_t i = 0; i < v.len; i++) fprintf(stderr, " %02x", v.ptr[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", want[i]);
        fprintf(stderr, "\n");
        assert(0);
    }
}

#define EXPECT(w, what, ...)                                                   \
    do {                                                                       \
        const uint8_t want_[] = {__VA_ARGS__};                                 \
        expect(w, what, want_, sizeof want_);                                  \
    } while (0)

static void canonical_encodings(void) {
    sluice_writer w = SLUICE_WRITER_INIT;
    sluice_put_int(&w, 0); EXPECT(&w, "0", 0x00);
    sluice_put_int(&w, 127); EXPECT(&w, "127", 0x7f);
    sluice_put_int(&w, 128); EXPECT(&w, "128", 0xcc, 0x80);
    sluice_put_int(&w, 65535); EXPECT(&w, "65535", 0xcd, 0xff, 0xff);
    sluice_put_int(&w, 65536); EXPECT(&w, "65536", 0xce, 0x00, 0x01, 0x00, 0x00);
    sluice_put_int(&w, 1ll << 32); EXPECT(&w, "2^32", 0xcf, 0, 0, 0, 1, 0, 0, 0, 0);
    sluice_put_int(&w, -1); EXPECT(&w, "-1", 0xff);
    sluice_put_int(&w, -32); EXPECT(&w, "-32", 0xe0);
    sluice_put_int(&w, -33); EXPECT(&w, "-33", 0xd0, 0xdf);
    sluice_put_int(&w, -129); EXPECT(&w, "-129", 0xd1, 0xff, 0x7f);
    sluice_put_int(&w, INT64_MIN); EXPECT(&w, "min", 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
    sluice_put_float(&w, 1.5); EXPECT(&w, "1.5", 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
    sluice_put_bool(&w, true); EXPECT(&w, "true", 0xc3);
    sluice_put_nil(&w); EXPECT(&w, "nil", 0xc0);
    sluice_put_str(&w, "ab"); EXPECT(&w, "ab", 0xa2, 'a', 'b');
    char long_str[40];
    memset(long_str, 'x', sizeof long_str);
    sluice_put_strn(&w, long_str, 40);
    assert(w.bytes[w.offsets[w.count - 1]] == 0xd9 && w.bytes[w.offsets[w.count - 1] + 1] == 40);
    const uint8_t bin[] = {1, 2};
    sluice_put_bin(&w, bin, 2); EXPECT(&w, "bin", 0xc4, 2, 1, 2);
    sluice_put_array(&w, 2);
    sluice_put_str(&w, "a");
    sluice_put_int(&w, 1);
    EXPECT(&w, "[a, 1]", 0x92, 0xa1, 'a', 0x01);
    sluice_put_map(&w, 1);
    sluice_put_str(&w, "k");
    sluice_put_array(&w, 0);
    EXPECT(&w, "{k: []}", 0x81, 0xa1, 'k', 0x90);
    assert(w.count == 19 && w.depth == 0);
    sluice_writer_free(&w);
}

static void elements_end_where_values_do(void) {
    sluice_writer w = SLUICE_WRITER_INIT;
    sluice_put_array(&w, 2);
    assert(w.count == 0);
    sluice_put_array(&w, 1);
    sluice_put_int(&w, 1);
    assert(w.count == 0);
    sluice_put_int(&w, 2);
    assert(w.count == 1);
    sluice_put_str(&w, "x");
    assert(w.count == 2);
    sluice_value nested = sluice_written(&w, 0);
    assert(sluice_type_of(nested) == SLUICE_ARRAY && sluice_len(nested) == 2);
    assert(sluice_len(sluice_at(nested, 0)) == 1);
    int64_t two;
    assert(sluice_get_int(sluice_at(nested, 1), &two) && two == 2);
    assert(sluice_at(nested, 2).len == 0);
    sluice_writer_free(&w);
}

static void reading_values(void) {
    sluice_writer w = SLUICE_WRITER_INIT;
    sluice_put_map(&w, 2);
    sluice_put_str(&w, "device");
    sluice_put_str(&w, "fan-2");
    sluice_put_str(&w, "watts");
    sluice_put_float(&w, 12.5);
    sluice_value m = sluice_written(&w, 0);
    assert(sluice_type_of(m) == SLUICE_MAP && sluice_len(m) == 2);
    assert(sluice_str_eq(sluice_get(m, "device"), "fan-2"));
    double watts;
    assert(sluice_get_float(sluice_get(m, "watts"), &watts) && watts == 12.5);
    assert(sluice_get(m, "missing").len == 0);
    sluice_value k, v;
    assert(sluice_entry(m, 1, &k, &v) && sluice_str_eq(k, "watts"));
    assert(!sluice_entry(m, 2, &k, &v));
    int64_t i;
    assert(!sluice_get_int(sluice_get(m, "device"), &i));
    const char *s;
    size_t n;
    assert(!sluice_get_str(sluice_get(m, "watts"), &s, &n));
    double f;
    sluice_put_int(&w, -5);
    assert(sluice_get_float(sluice_written(&w, 1), &f) && f == -5.0);
    sluice_put_uint(&w, UINT64_MAX);
    assert(!sluice_get_int(sluice_written(&w, 2), &i));
    assert(sluice_equal(sluice_written(&w, 0), sluice_written(&w, 0)));
    assert(!sluice_equal(sluice_written(&w, 0), sluice_written(&w, 1)));
    sluice_writer_free(&w);
}

static void malformed_values_are_invalid(void) {
    const uint8_t truncated[] = {0x92, 0x01};
    const uint8_t short_str[] = {0xa3, 'a'};
    const uint8_t never_used[] = {0xc1};
    const uint8_t trailing[] = {0x01, 0x02};
    sluice_value a = {truncated, sizeof truncated}, b = {short_str, sizeof short_str},
                 c = {never_used, 1}, d = {trailing, 2}, none = {NULL, 0};
    assert(sluice_type_of(a) == SLUICE_INVALID);
    assert(sluice_type_of(b) == SLUICE_INVALID);
    assert(sluice_type_of(c) == SLUICE_INVALID);
    assert(sluice_type_of(d) == SLUICE_INVALID);
    assert(sluice_type_of(none) == SLUICE_ABSENT);
    assert(sluice_at(a, 1).len == 0);
    assert(strcmp(sluice_type_name(SLUICE_STR), "str") == 0);
}

static void refusals_and_state(void) {
    sluice_call call = {0};
    assert(sluice_refuse(&call, "bad %d", 7) == SLUICE_REFUSED);
    assert(strcmp(call.refusal, "bad 7") == 0);
    assert(sluice_refuse(NULL, "no call") == SLUICE_REFUSED);
    free(call.refusal);
    sluice_state st;
    memset(&st, 0, sizeof st);
    assert(!sluice_state_exists(&st));
    sluice_put_int(sluice_state_update(&st), 3);
    assert(sluice_state_exists(&st));
    sluice_state_remove(&st);
    assert(!sluice_state_exists(&st));
    sluice_writer_free(&st.update);
}

int main(void) {
    canonical_encodings();
    elements_end_where_values_do();
    reading_values();
    malformed_values_are_invalid();
    refusals_and_state();
    puts("ok: sluice-sdk-c");
    return 0;
}
