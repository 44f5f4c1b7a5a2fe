//! The attribute macros' adapters, called as the host calls them: whichever
//! codec a signature gets (the SDK's own for plain shapes, serde's for any
//! other), the results and the errors are those of the serde loops.

use serde::{Deserialize, Serialize};
use sluice_sdk as sluice;
use sluice_sdk::plain::SerdeCodec;
use sluice_sdk::{Call, CallError, Column, Function, run};

#[sluice::map]
fn pair(word: &str) -> (&str, i64) {
    (word, 1)
}

// Named lifetimes on purpose: the adapter names the types without them.
#[allow(clippy::needless_lifetimes)]
#[sluice::map]
fn named<'a>(word: &'a str) -> Option<(&'a str, u8)> {
    (!word.is_empty()).then_some((word, word.len() as u8))
}

#[sluice::map]
fn checked(n: i64) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{n} is not a u32"))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    device: String,
    watts: f64,
}

#[sluice::map]
fn watts(r: Reading) -> (String, f64) {
    (r.device, r.watts)
}

#[sluice::flat_map]
fn words(line: &str) -> impl Iterator<Item = &str> {
    sluice::split_on(line, ' ')
}

#[sluice::flat_map]
fn twice(n: i32) -> Vec<i32> {
    vec![n, -n]
}

#[sluice::filter]
fn positive(kv: (&str, i64)) -> bool {
    kv.1 > 0
}

#[sluice::reduce]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[sluice::fold]
fn longest(acc: String, next: &str) -> String {
    if next.len() > acc.len() {
        next.to_string()
    } else {
        acc
    }
}

#[sluice::inverse_reduce]
fn subtract(total: i64, gone: i64) -> i64 {
    total - gone
}

fn column<T: Serialize>(values: &[T]) -> Column {
    let mut c = Column::new();
    for v in values {
        c.push(v).expect("push");
    }
    c
}

/// A column whose elements are the given encoded bytes.
fn raw(elements: &[&[u8]]) -> Column {
    let mut c = Column::new();
    for e in elements {
        c.push_encoded(e).expect("push");
    }
    c
}

fn values(f: &Function, input: &Column) -> Result<Column, CallError> {
    let Call::Values(call) = f.call else {
        panic!("{} is not a values function", f.name)
    };
    call(input)
}

/// Inputs that no plain codec takes: another type, a non-canonical width,
/// invalid UTF-8, a float, a map, trailing bytes.
fn hostile() -> Vec<Column> {
    vec![
        raw(&[&[0xa1, 0x61], &[0x05]]),
        raw(&[&[0xd1, 0x00, 0x05]]),
        raw(&[&[0xa2, 0xff, 0xfe]]),
        raw(&[&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]]),
        raw(&[&[0x81, 0xa1, 0x61, 0x01]]),
        raw(&[&[0xa1, 0x61, 0x00]]),
        raw(&[&[0xdb, 0, 0, 0, 1, 0x62]]),
        raw(&[&[0x92, 0xa1, 0x61, 0xd0, 0x05]]),
        raw(&[&[0x92, 0xa1, 0x61]]),
        raw(&[&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]]),
    ]
}

#[test]
fn maps_agree_with_the_serde_loop() {
    let lines = column(&["a", "bb", "", "ünï", "a b  c"]);
    let mut inputs = hostile();
    inputs.push(lines.clone());
    for input in &inputs {
        assert_eq!(values(&pair::FUNCTION, input), run::map(input, pair));
        assert_eq!(values(&named::FUNCTION, input), run::map(input, named));
        assert_eq!(
            values(&checked::FUNCTION, input),
            run::try_map(input, checked)
        );
        assert_eq!(values(&words::FUNCTION, input), run::flat_map(input, words));
        assert_eq!(values(&twice::FUNCTION, input), run::flat_map(input, twice));
    }
    let out = values(&pair::FUNCTION, &lines).expect("pair");
    let want = column(&[("a", 1), ("bb", 1), ("", 1), ("ünï", 1), ("a b  c", 1)]);
    assert_eq!(out, want);
    let err = values(&checked::FUNCTION, &column(&[1i64, -1])).expect_err("-1");
    assert_eq!(
        (err.element, err.message.as_str()),
        (Some(1), "-1 is not a u32")
    );
    let r = Reading {
        device: "fan".into(),
        watts: 2.5,
    };
    let input = column(std::slice::from_ref(&r));
    assert_eq!(
        values(&watts::FUNCTION, &input),
        Ok(column(&[("fan", 2.5)]))
    );
}

#[test]
fn filters_and_reductions_agree_with_the_serde_loops() {
    let Call::Filter(filter) = positive::FUNCTION.call else {
        panic!("positive")
    };
    let mut inputs = hostile();
    inputs.push(column(&[("a", 1), ("b", 0), ("c", 7)]));
    for input in &inputs {
        assert_eq!(filter(input), run::filter(input, positive));
    }
    let Call::Reduce(reduce) = add::FUNCTION.call else {
        panic!("add")
    };
    let Call::Reduce(fold) = longest::FUNCTION.call else {
        panic!("longest")
    };
    let Call::Pair(inverse) = subtract::FUNCTION.call else {
        panic!("subtract")
    };
    let mut inputs = hostile();
    inputs.push(column(&[1i64, 2, 300, -4]));
    inputs.push(column(&["a", "ccc", "bb", "dddd"]));
    for input in &inputs {
        let groups = [0, input.len() as u32];
        assert_eq!(reduce(input, &groups), run::reduce(input, &groups, add));
        assert_eq!(
            fold(input, &groups),
            run::fold_with(input, &groups, longest, SerdeCodec, SerdeCodec)
        );
        let ones = column(&vec![1i64; input.len()]);
        assert_eq!(
            inverse(input, &ones),
            run::inverse_reduce(input, &ones, subtract)
        );
    }
    let sum = reduce(&column(&[1i64, 2, 300, -4]), &[0, 2, 4]).expect("sum");
    assert_eq!(sum, column(&[3i64, 296]));
}
