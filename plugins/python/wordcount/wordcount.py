"""The word count of Spark Streaming's socket example, in Python: split lines
into words, pair each word with 1, add the counts (the same functions as the
Rust `plugins/wordcount`).

Job functions: `wordcount.split`, `wordcount.pair`, `wordcount.add`,
`wordcount.subtract`, `wordcount.positive`, `wordcount.running_total`,
`wordcount.running_count`.
"""

import sluice


@sluice.flat_map
def split(line):
    """Splits a line into words on single spaces (as Spark's example)."""
    return line.split(" ")


@sluice.map
def pair(word):
    """Pairs a word with the count 1."""
    return (word, 1)


@sluice.reduce
def add(a, b):
    """Adds two counts."""
    return a + b


@sluice.inverse_reduce
def subtract(total, gone):
    """Takes a count back out of a total (the inverse of `add`)."""
    return total - gone


@sluice.filter
def positive(pair):
    """Keeps counts above zero."""
    return pair[1] > 0


@sluice.update_state
def running_total(new, total):
    """A running count: the batch's new counts added to the total so far."""
    return sum(new) + (total or 0)


@sluice.map_state
def running_count(word, one, count):
    """Per occurrence, the word's running count `(word, count, False)`; when
    the word times out, `(word, count, True)` and its count is dropped."""
    total = count.get() or 0
    if one is None:
        return (word, total, True)
    count.update(total + one)
    return (word, total + one, False)


Operator = sluice.export(
    split,
    pair,
    add,
    subtract,
    positive,
    running_total,
    running_count,
    name="wordcount",
    version="0.1.0",
)
