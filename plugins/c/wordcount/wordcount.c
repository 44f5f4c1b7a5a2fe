/*
 * The word count of Spark Streaming's socket example, in C: split lines into
 * words, pair each word with 1, add the counts (the same functions as the
 * Rust `plugins/wordcount`).
 *
 * Job functions: `wordcount.split`, `wordcount.pair`, `wordcount.add`,
 * `wordcount.subtract`, `wordcount.positive`, `wordcount.running_total`,
 * `wordcount.running_count`.
 */
#include "sluice.h"

#include <string.h>

/* Splits a line into words on single spaces ("a  b" has an empty word, as in Spark's example). */
static int split(sluice_call *call, sluice_value line, sluice_writer *out) {
    const char *s;
    size_t n;
    if (!sluice_get_str(line, &s, &n))
        return sluice_refuse(call, "expected a line of text, got %s", sluice_type_name(sluice_type_of(line)));
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == ' ') {
            sluice_put_strn(out, s + start, i - start);
            start = i + 1;
        }
    }
    return SLUICE_OK;
}

/* Pairs a word with the count 1. */
static int pair(sluice_call *call, sluice_value word, sluice_writer *out) {
    if (sluice_type_of(word) != SLUICE_STR)
        return sluice_refuse(call, "expected a word, got %s", sluice_type_name(sluice_type_of(word)));
    sluice_put_array(out, 2);
    sluice_put_value(out, word);
    sluice_put_int(out, 1);
    return SLUICE_OK;
}

static int counts(sluice_call *call, sluice_value a, sluice_value b, int64_t *x, int64_t *y) {
    if (!sluice_get_int(a, x) || !sluice_get_int(b, y))
        return sluice_refuse(call, "expected two counts, got %s and %s",
                             sluice_type_name(sluice_type_of(a)), sluice_type_name(sluice_type_of(b)));
    return SLUICE_OK;
}

/* Adds two counts. */
static int add(sluice_call *call, sluice_value a, sluice_value b, sluice_writer *out) {
    int64_t x, y;
    if (counts(call, a, b, &x, &y) != SLUICE_OK) return SLUICE_REFUSED;
    sluice_put_int(out, x + y);
    return SLUICE_OK;
}

/* Takes a count back out of a total (the inverse of `add`, for incremental windows). */
static int subtract(sluice_call *call, sluice_value total, sluice_value gone, sluice_writer *out) {
    int64_t x, y;
    if (counts(call, total, gone, &x, &y) != SLUICE_OK) return SLUICE_REFUSED;
    sluice_put_int(out, x - y);
    return SLUICE_OK;
}

/* Keeps counts above zero (drops keys whose windowed count fell to 0). */
static int positive(sluice_call *call, sluice_value pair, bool *keep) {
    int64_t count;
    if (sluice_len(pair) != 2 || !sluice_get_int(sluice_at(pair, 1), &count))
        return sluice_refuse(call, "expected a (word, count) pair");
    *keep = count > 0;
    return SLUICE_OK;
}

/* A running count: the new counts of the batch added to the total so far. */
static int running_total(sluice_call *call, const sluice_values *news, sluice_value total,
                         sluice_writer *out) {
    int64_t sum = 0, n;
    if (total.len && !sluice_get_int(total, &sum)) return sluice_refuse(call, "the total is not a count");
    for (size_t i = 0; i < news->count; i++) {
        if (!sluice_get_int(sluice_values_at(news, i), &n)) return sluice_refuse(call, "a new value is not a count");
        sum += n;
    }
    sluice_put_int(out, sum);
    return SLUICE_OK;
}

/* Per word occurrence, the word's running count (word, count, false); when the
 * word times out, (word, count, true) and its count is dropped. */
static int running_count(sluice_call *call, sluice_value word, sluice_value one,
                         sluice_state *count, sluice_writer *out) {
    int64_t total = 0, n;
    if (sluice_state_exists(count) && !sluice_get_int(count->value, &total))
        return sluice_refuse(call, "the state is not a count");
    bool timed_out = one.len == 0;
    if (!timed_out) {
        if (!sluice_get_int(one, &n)) return sluice_refuse(call, "expected a count");
        total += n;
        sluice_put_int(sluice_state_update(count), total);
    }
    sluice_put_array(out, 3);
    sluice_put_value(out, word);
    sluice_put_int(out, total);
    sluice_put_bool(out, timed_out);
    return SLUICE_OK;
}

SLUICE_PLUGIN("wordcount", "0.1.0",
              SLUICE_FLAT_MAP(split, "Splits a line into words on single spaces (as Spark's example)."),
              SLUICE_MAP(pair, "Pairs a word with the count 1."),
              SLUICE_REDUCE(add, "Adds two counts."),
              SLUICE_INVERSE_REDUCE(subtract, "Takes a count back out of a total (the inverse of `add`)."),
              SLUICE_FILTER(positive, "Keeps counts above zero."),
              SLUICE_UPDATE_STATE(running_total, "A running count: the batch's new counts added to the total so far."),
              SLUICE_MAP_STATE(running_count, "Per occurrence, the word's running count (word, count, timed out)."));
