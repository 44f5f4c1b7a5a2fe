// Unit tests of the JavaScript guest SDK under plain Node (`node --test
// guest-sdk/js`): canonical MessagePack, and `invoke` for each kind on
// hand-built columnar inputs.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as sluice from "./sluice.js";

const hex = (b) => Buffer.from(b).toString("hex");

function column(values, absent = []) {
  const parts = values.map((v, i) => (absent.includes(i) ? new Uint8Array() : sluice.pack(v)));
  const offsets = [0];
  for (const p of parts) offsets.push(offsets[offsets.length - 1] + p.length);
  const bytes = new Uint8Array(offsets[offsets.length - 1]);
  parts.forEach((p, i) => bytes.set(p, offsets[i]));
  return { bytes, offsets: values.length ? Uint32Array.from(offsets) : new Uint32Array() };
}

function decodeColumn(c) {
  const out = [];
  for (let i = 0; i + 1 < c.offsets.length; i++) {
    out.push(c.offsets[i] === c.offsets[i + 1] ? undefined : sluice.unpack(c.bytes.subarray(c.offsets[i], c.offsets[i + 1])));
  }
  return out;
}

const EMPTY = { bytes: new Uint8Array(), offsets: new Uint32Array() };
const ctx = { batchTimeMs: 1000n, partition: 0, partitions: 1, attempt: 0 };
const input = (values, extra = {}) => ({
  primary: { keys: extra.keys ?? EMPTY, values: column(values) },
  groups: Uint32Array.from(extra.groups ?? []),
  secondary: extra.secondary ?? EMPTY,
});

test("encodes canonically, as the Rust and Python SDKs do", () => {
  assert.equal(hex(sluice.pack(["the", 1])), "92a374686501");
  assert.equal(hex(sluice.pack(300)), "cd012c");
  assert.equal(hex(sluice.pack(-33)), "d0df");
  assert.equal(hex(sluice.pack("é")), "a2c3a9");
  assert.equal(hex(sluice.pack(1.5)), "cb3ff8000000000000");
  for (const v of [0, -1, 2 ** 40, -(2 ** 40), "x".repeat(40), [1, [2, "b"]], { k: 1 }, true, null, 2n ** 63n]) {
    assert.deepEqual(sluice.unpack(sluice.pack(v)), v);
  }
});

test("invokes every kind on columnar input", () => {
  const split = sluice.flatMap(function* (line) {
    yield* line.split(" ");
  });
  const pair = sluice.map((w) => [w, 1]);
  const long = sluice.filter((w) => w.length > 1);
  const add = sluice.reduce((a, b) => a + b);
  const total = sluice.updateState((news, t) => (news.length ? news.reduce((a, b) => a + b, 0) + (t ?? 0) : null));
  const refuse = sluice.map((w) => {
    if (w === "bad") throw new sluice.Refuse("no bad words");
    return w;
  });
  const op = sluice.plugin({ name: "t", functions: { split, pair, long, add, total, refuse } });
  assert.deepEqual(
    op.describe().functions.map((f) => [f.name, f.kind]),
    [["split", "flat-map"], ["pair", "map"], ["long", "filter"], ["add", "reduce"], ["total", "update-state"], ["refuse", "map"]],
  );
  assert.deepEqual(decodeColumn(op.invoke(0, ctx, input(["a bb", "c"])).val.values), ["a", "bb", "c"]);
  assert.deepEqual(decodeColumn(op.invoke(1, ctx, input(["a"])).val.values), [["a", 1]]);
  assert.deepEqual([...op.invoke(2, ctx, input(["a", "bb", "ccc"])).val], [1, 2]);
  assert.deepEqual(decodeColumn(op.invoke(3, ctx, input([1, 2, 3, 10], { groups: [0, 3, 4] })).val.values), [6, 10]);
  // update-state: group 0 has news and no state, group 1 has state and no
  // news (removed: absent), group 2 both.
  const states = column([null, 5, 7], [0]);
  const out = op.invoke(4, ctx, input([1, 2, 3], { groups: [0, 2, 2, 3], secondary: states })).val.values;
  assert.deepEqual(decodeColumn(out), [3, undefined, 10]);
  // map_values: keys kept.
  const keyed = op.invoke(1, ctx, input(["x", "y"], { keys: column(["k1", "k2"]) })).val;
  assert.deepEqual(decodeColumn(keyed.keys), ["k1", "k2"]);
  assert.deepEqual(decodeColumn(keyed.values), [["x", 1], ["y", 1]]);
  // A refusal names its element.
  assert.throws(
    () => op.invoke(5, ctx, input(["ok", "bad"])),
    (e) => e.payload.kind === "invalid-input" && e.payload.element === 1 && e.payload.message === "no bad words",
  );
  assert.throws(() => op.invoke(9, ctx, input([])), (e) => e.payload.kind === "unknown-function");
  assert.equal(sluice.context().batchTimeMs, 1000);
});

test("mapState carries the state per key and times keys out", () => {
  const count = sluice.mapState((word, one, state) => {
    const total = state.get() ?? 0;
    if (one === null) return [word, total, true];
    state.update(total + one);
    return [word, total + one, false];
  });
  const op = sluice.plugin({ name: "t", functions: { count } });
  // Group 0: key "a" (state 2) with two new values; group 1: key "b"
  // (state 5) timing out.
  const values = column([1, 1, 0], [2]);
  const out = op.invoke(0, ctx, {
    primary: { keys: column(["a", "a", "b"]), values },
    groups: Uint32Array.from([0, 2, 3]),
    secondary: column([2, 5]),
  }).val.values;
  assert.deepEqual(decodeColumn(out), [["a", 3, false], ["a", 4, false], ["b", 5, true], 4, undefined]);
});
