// Sluice guest SDK for JavaScript: stream operators as plain functions.
//
// A plugin is an ES module of wrapped functions and one default export:
//
//   import * as sluice from "./sluice.js";
//   export const split = sluice.flatMap((line) => line.split(" "));
//   export const pair = sluice.map((word) => [word, 1]);
//   export const add = sluice.reduce((a, b) => a + b);
//   export default sluice.plugin({ name: "wordcount", version: "0.1.0",
//                                  functions: { split, pair, add } });
//
// `sluice plugin build` bundles it with this file and builds a WebAssembly
// component with ComponentizeJS; the wrapped functions stay plain functions
// (call `split("a b")` in a unit test with Node).
//
// Values: strings, numbers (integers are sent as integers, others as
// float64; integers beyond 2^53 arrive as BigInt), booleans, null, arrays,
// plain objects (string keys) or Maps, Uint8Array (bytes). A keyed element
// arrives as a two-element array [key, value].
//
// Throw `new sluice.Refuse("why")` to refuse an element (the host fails the
// batch naming it); any other exception is a bug: the call traps, is retried
// once on a fresh instance, then fails the batch with the error's message.

export const SDK = "sluice-sdk-js 0.1.0";

/** Refuses the element being processed (a typed error, not a bug). */
export class Refuse extends Error {}

let hostLog = (level, message) => console.error(`[${level}] ${message}`);
let current = { batchTimeMs: 0, partition: 0, partitions: 1, attempt: 0 };

/** Where and when the current call happens. */
export function context() {
  return current;
}

/** Called by the component's entry module with the host's `log`. */
export function setLog(log) {
  hostLog = log;
}

export const trace = (m) => hostLog("trace", String(m));
export const debug = (m) => hostLog("debug", String(m));
export const info = (m) => hostLog("info", String(m));
export const warn = (m) => hostLog("warn", String(m));
export const error = (m) => hostLog("error", String(m));

function wrap(kind, pair = false) {
  return (fn, doc = "") => {
    const f = (...args) => fn(...args);
    f.sluice = { kind, pair, doc, fn };
    return f;
  };
}

export const map = wrap("map");
export const flatMap = wrap("flat-map");
export const filter = wrap("filter");
export const mapPartitions = wrap("map-partitions");
export const transform = wrap("transform");
export const transformWith = wrap("transform", true);
export const reduce = wrap("reduce");
export const inverseReduce = wrap("inverse-reduce");
export const updateState = wrap("update-state");
export const mapState = wrap("map-state");
export const sink = wrap("sink");
/** A reduce-kind function whose accumulator differs from its values
 * (combine_by_key's merge_value): the same call shape as `reduce`. */
export const fold = reduce;

/** The running state of one key in a `mapState` function. */
export class State {
  constructor(value, timingOut = false) {
    this.value = value;
    this.timingOut = timingOut;
  }
  /** The state, or null if the key has none. */
  get() {
    return this.value;
  }
  /** Whether the key has a state. */
  exists() {
    return this.value !== null && this.value !== undefined;
  }
  /** Sets the key's state (a key that is timing out is removed anyway). */
  update(value) {
    this.value = value;
  }
  /** Removes the key's state; if the key comes back it starts again. */
  remove() {
    this.value = null;
  }
  /** Whether this call is the key's timeout (no new value). */
  isTimingOut() {
    return this.timingOut;
  }
}

// ---- canonical MessagePack ----

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

class Writer {
  constructor() {
    this.buf = new Uint8Array(1024);
    this.len = 0;
    this.view = new DataView(this.buf.buffer);
  }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }
  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  uint(marker, n, width) {
    this.reserve(1 + width);
    this.buf[this.len++] = marker;
    if (width === 1) this.view.setUint8(this.len, n);
    else if (width === 2) this.view.setUint16(this.len, n);
    else if (width === 4) this.view.setUint32(this.len, n);
    this.len += width;
  }
}

function encodeNumberInt(w, v) {
  // A safe integer Number, without BigInt (slow in an interpreter).
  if (v >= 0) {
    if (v < 0x80) return w.byte(v);
    if (v < 0x100) return w.uint(0xcc, v, 1);
    if (v < 0x10000) return w.uint(0xcd, v, 2);
    if (v < 0x100000000) return w.uint(0xce, v, 4);
  } else {
    if (v >= -32) return w.byte(v & 0xff);
    w.reserve(5);
    if (v >= -0x80) {
      w.buf[w.len++] = 0xd0;
      w.view.setInt8(w.len, v);
      w.len += 1;
      return;
    }
    if (v >= -0x8000) {
      w.buf[w.len++] = 0xd1;
      w.view.setInt16(w.len, v);
      w.len += 2;
      return;
    }
    if (v >= -0x80000000) {
      w.buf[w.len++] = 0xd2;
      w.view.setInt32(w.len, v);
      w.len += 4;
      return;
    }
  }
  encodeInt(w, BigInt(v));
}

function encodeInt(w, v) {
  // v: a safe integer Number or a BigInt.
  const big = typeof v === "bigint";
  const n = big ? v : BigInt(v);
  if (n >= 0n) {
    if (n < 0x80n) return w.byte(Number(n));
    if (n < 0x100n) return w.uint(0xcc, Number(n), 1);
    if (n < 0x10000n) return w.uint(0xcd, Number(n), 2);
    if (n < 0x100000000n) return w.uint(0xce, Number(n), 4);
    if (n < 0x10000000000000000n) {
      w.reserve(9);
      w.buf[w.len++] = 0xcf;
      w.view.setBigUint64(w.len, n);
      w.len += 8;
      return;
    }
  } else {
    if (n >= -32n) return w.byte(Number(n) & 0xff);
    w.reserve(9);
    if (n >= -0x80n) {
      w.buf[w.len++] = 0xd0;
      w.view.setInt8(w.len, Number(n));
      w.len += 1;
      return;
    }
    if (n >= -0x8000n) {
      w.buf[w.len++] = 0xd1;
      w.view.setInt16(w.len, Number(n));
      w.len += 2;
      return;
    }
    if (n >= -0x80000000n) {
      w.buf[w.len++] = 0xd2;
      w.view.setInt32(w.len, Number(n));
      w.len += 4;
      return;
    }
    if (n >= -0x8000000000000000n) {
      w.buf[w.len++] = 0xd3;
      w.view.setBigInt64(w.len, n);
      w.len += 8;
      return;
    }
  }
  throw new RangeError(`${v} does not fit in 64 bits`);
}

function header(w, n, fix, fixMax, m16, m32) {
  if (n < fixMax) w.byte(fix | n);
  else if (n < 0x10000) w.uint(m16, n, 2);
  else w.uint(m32, n, 4);
}

export function encode(w, v) {
  if (typeof v === "string") {
    const n = v.length;
    if (n < 32) {
      // Short ASCII strings (most words and keys): no TextEncoder.
      w.reserve(n + 1);
      const start = w.len;
      w.buf[start] = 0xa0 | n;
      let i = 0;
      for (; i < n; i++) {
        const c = v.charCodeAt(i);
        if (c >= 0x80) break;
        w.buf[start + 1 + i] = c;
      }
      if (i === n) {
        w.len = start + 1 + n;
        return;
      }
    }
    const b = enc.encode(v);
    const len = b.length;
    if (len < 32) w.byte(0xa0 | len);
    else if (len < 0x100) w.uint(0xd9, len, 1);
    else if (len < 0x10000) w.uint(0xda, len, 2);
    else w.uint(0xdb, len, 4);
    w.bytes(b);
  } else if (typeof v === "number") {
    if (Number.isSafeInteger(v)) encodeNumberInt(w, v);
    else {
      w.reserve(9);
      w.buf[w.len++] = 0xcb;
      w.view.setFloat64(w.len, v);
      w.len += 8;
    }
  } else if (typeof v === "bigint") {
    encodeInt(w, v);
  } else if (v === null || v === undefined) {
    w.byte(0xc0);
  } else if (v === true) {
    w.byte(0xc3);
  } else if (v === false) {
    w.byte(0xc2);
  } else if (Array.isArray(v)) {
    header(w, v.length, 0x90, 16, 0xdc, 0xdd);
    for (const x of v) encode(w, x);
  } else if (v instanceof Uint8Array) {
    const n = v.length;
    if (n < 0x100) w.uint(0xc4, n, 1);
    else if (n < 0x10000) w.uint(0xc5, n, 2);
    else w.uint(0xc6, n, 4);
    w.bytes(v);
  } else if (v instanceof Map) {
    header(w, v.size, 0x80, 16, 0xde, 0xdf);
    for (const [k, x] of v) {
      encode(w, k);
      encode(w, x);
    }
  } else if (typeof v === "object") {
    const keys = Object.keys(v);
    header(w, keys.length, 0x80, 16, 0xde, 0xdf);
    for (const k of keys) {
      encode(w, k);
      encode(w, v[k]);
    }
  } else {
    throw new TypeError(`cannot encode a ${typeof v} as a Sluice value`);
  }
}

/** Decodes one value of `buf` at `pos`: returns [value, next position]. */
export function decode(buf, pos) {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return decodeAt(buf, view, pos);
}

function int(n) {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

function decodeAt(buf, view, pos) {
  const b = buf[pos++];
  if (b < 0x80) return [b, pos];
  if (b >= 0xe0) return [b - 0x100, pos];
  if (b >= 0xa0 && b <= 0xbf) {
    const n = b & 0x1f;
    let s = "";
    for (let i = pos; i < pos + n; i++) {
      const c = buf[i];
      if (c >= 0x80) return [dec.decode(buf.subarray(pos, pos + n)), pos + n];
      s += String.fromCharCode(c);
    }
    return [s, pos + n];
  }
  if (b >= 0x90 && b <= 0x9f) return array(buf, view, pos, b & 0x0f);
  if (b >= 0x80 && b <= 0x8f) return map_(buf, view, pos, b & 0x0f);
  switch (b) {
    case 0xc0:
      return [null, pos];
    case 0xc2:
      return [false, pos];
    case 0xc3:
      return [true, pos];
    case 0xcc:
      return [view.getUint8(pos), pos + 1];
    case 0xcd:
      return [view.getUint16(pos), pos + 2];
    case 0xce:
      return [view.getUint32(pos), pos + 4];
    case 0xcf:
      return [int(view.getBigUint64(pos)), pos + 8];
    case 0xd0:
      return [view.getInt8(pos), pos + 1];
    case 0xd1:
      return [view.getInt16(pos), pos + 2];
    case 0xd2:
      return [view.getInt32(pos), pos + 4];
    case 0xd3:
      return [int(view.getBigInt64(pos)), pos + 8];
    case 0xca:
      return [view.getFloat32(pos), pos + 4];
    case 0xcb:
      return [view.getFloat64(pos), pos + 8];
    case 0xd9:
    case 0xda:
    case 0xdb: {
      const w = 1 << (b - 0xd9);
      const n = w === 1 ? view.getUint8(pos) : w === 2 ? view.getUint16(pos) : view.getUint32(pos);
      pos += w;
      return [dec.decode(buf.subarray(pos, pos + n)), pos + n];
    }
    case 0xc4:
    case 0xc5:
    case 0xc6: {
      const w = 1 << (b - 0xc4);
      const n = w === 1 ? view.getUint8(pos) : w === 2 ? view.getUint16(pos) : view.getUint32(pos);
      pos += w;
      return [buf.slice(pos, pos + n), pos + n];
    }
    case 0xdc:
      return array(buf, view, pos + 2, view.getUint16(pos));
    case 0xdd:
      return array(buf, view, pos + 4, view.getUint32(pos));
    case 0xde:
      return map_(buf, view, pos + 2, view.getUint16(pos));
    case 0xdf:
      return map_(buf, view, pos + 4, view.getUint32(pos));
  }
  throw new Error(`unsupported MessagePack marker 0x${b.toString(16)}`);
}

function array(buf, view, pos, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) [out[i], pos] = decodeAt(buf, view, pos);
  return [out, pos];
}

function map_(buf, view, pos, n) {
  const entries = [];
  let allStrings = true;
  for (let i = 0; i < n; i++) {
    let k, v;
    [k, pos] = decodeAt(buf, view, pos);
    [v, pos] = decodeAt(buf, view, pos);
    if (typeof k !== "string") allStrings = false;
    entries.push([k, v]);
  }
  return [allStrings ? Object.fromEntries(entries) : new Map(entries), pos];
}

// ---- the plugin side of the contract ----

const ABSENT = Symbol("absent");

class CallError {
  constructor(kind, message, element) {
    this.payload = { kind, message, element };
  }
}

function column(col) {
  // Returns { buf, view, offs, n }.
  const buf = col.bytes;
  return {
    buf,
    view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength),
    offs: col.offsets,
    n: Math.max(col.offsets.length - 1, 0),
  };
}

function valueAt(c, i) {
  const a = c.offs[i];
  return a === c.offs[i + 1] ? ABSENT : decodeAt(c.buf, c.view, a)[0];
}

function rawAt(c, i) {
  return c.buf.subarray(c.offs[i], c.offs[i + 1]);
}

class Out {
  constructor() {
    this.w = new Writer();
    this.offs = [0];
  }
  push(v) {
    encode(this.w, v);
    this.offs.push(this.w.len);
  }
  pushRaw(b) {
    this.w.bytes(b);
    this.offs.push(this.w.len);
  }
  absent() {
    this.offs.push(this.w.len);
  }
  column() {
    return {
      bytes: this.w.buf.slice(0, this.w.len),
      offsets: this.offs.length > 1 ? Uint32Array.from(this.offs) : new Uint32Array(),
    };
  }
}

const EMPTY = { bytes: new Uint8Array(), offsets: new Uint32Array() };

function refusing(i, fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    if (e instanceof Refuse) throw new CallError("invalid-input", e.message || "refused", i);
    throw e;
  }
}

/** The plugin: `name`, `version` and its functions by name. */
export function plugin({ name, version = "0.1.0", functions }) {
  const list = Object.entries(functions).map(([fname, f]) => {
    if (!f || !f.sluice) throw new TypeError(`${fname} is not a Sluice function: wrap it (e.g. sluice.map(fn))`);
    return { name: fname, ...f.sluice };
  });
  return {
    describe() {
      return {
        name,
        version,
        sdk: SDK,
        functions: list.map((f) => ({ name: f.name, kind: f.kind, doc: f.doc })),
      };
    },
    invoke(index, ctx, input) {
      try {
        return invoke(list, index, ctx, input);
      } catch (e) {
        if (e instanceof CallError) throw e;
        // A bug: the call traps; the error log line is the host's message.
        error(`${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e}`);
        throw e;
      }
    },
  };
}

function invoke(list, index, ctx, input) {
  const f = list[index];
  if (!f) throw new CallError("unknown-function", `no function ${index}: the plugin has ${list.length} functions`);
  current = {
    batchTimeMs: Number(ctx.batchTimeMs),
    partition: ctx.partition,
    partitions: ctx.partitions,
    attempt: ctx.attempt,
  };
  const keys = column(input.primary.keys);
  const vals = column(input.primary.values);
  const out = new Out();
  const batch = (keysOut) => ({
    tag: "batch",
    val: { keys: keysOut ? keysOut.column() : EMPTY, values: out.column() },
  });
  const { kind, fn } = f;
  if ((kind === "map" || kind === "flat-map") && keys.n > 0) {
    // map_values / flat_map_values: the function sees values; outputs keep keys.
    const keysOut = new Out();
    for (let i = 0; i < vals.n; i++) {
      const got = refusing(i, fn, valueAt(vals, i));
      for (const y of kind === "map" ? [got] : got) {
        keysOut.pushRaw(rawAt(keys, i));
        out.push(y);
      }
    }
    return batch(keysOut);
  }
  const values = () => {
    const v = new Array(vals.n);
    for (let i = 0; i < vals.n; i++) {
      v[i] = keys.n > 0 ? [valueAt(keys, i), valueAt(vals, i)] : valueAt(vals, i);
    }
    return v;
  };
  const groups = input.groups;
  switch (kind) {
    case "map": {
      const v = values();
      const w = out.w;
      const offs = out.offs;
      let i = 0;
      try {
        for (; i < v.length; i++) {
          encode(w, fn(v[i]));
          offs.push(w.len);
        }
      } catch (e) {
        if (e instanceof Refuse) throw new CallError("invalid-input", e.message || "refused", i);
        throw e;
      }
      return batch();
    }
    case "flat-map": {
      const v = values();
      const w = out.w;
      const offs = out.offs;
      let i = 0;
      try {
        for (; i < v.length; i++) {
          const ys = fn(v[i]);
          if (Array.isArray(ys)) {
            for (let j = 0; j < ys.length; j++) {
              encode(w, ys[j]);
              offs.push(w.len);
            }
          } else {
            // Any iterable (a generator, a Set, …).
            for (const y of ys) {
              encode(w, y);
              offs.push(w.len);
            }
          }
        }
      } catch (e) {
        if (e instanceof Refuse) throw new CallError("invalid-input", e.message || "refused", i);
        throw e;
      }
      return batch();
    }
    case "filter": {
      const v = values();
      const kept = [];
      for (let i = 0; i < v.length; i++) if (refusing(i, fn, v[i])) kept.push(i);
      return { tag: "selection", val: Uint32Array.from(kept) };
    }
    case "map-partitions":
    case "transform": {
      let result;
      if (f.pair) {
        const other = column(input.secondary);
        const o = [];
        for (let i = 0; i < other.n; i++) o.push(valueAt(other, i));
        result = refusing(undefined, fn, values(), o);
      } else {
        result = refusing(undefined, fn, values());
      }
      for (const y of result) out.push(y);
      return batch();
    }
    case "sink":
      try {
        fn(values());
      } catch (e) {
        if (e instanceof Refuse) throw new CallError("failed", e.message || "the sink failed");
        throw e;
      }
      return { tag: "none" };
    case "reduce":
      for (let g = 0; g + 1 < groups.length; g++) {
        const [start, end] = [groups[g], groups[g + 1]];
        if (start >= end || end > vals.n) {
          throw new CallError("unsupported", `group ${g} is empty or out of range (${start}..${end})`);
        }
        let acc = valueAt(vals, start);
        for (let i = start + 1; i < end; i++) acc = refusing(i, fn, acc, valueAt(vals, i));
        out.push(acc);
      }
      return batch();
    case "inverse-reduce": {
      const old = column(input.secondary);
      if (old.n !== vals.n) throw new CallError("unsupported", "inverse-reduce needs one value to remove per element");
      for (let i = 0; i < vals.n; i++) out.push(refusing(i, fn, valueAt(vals, i), valueAt(old, i)));
      return batch();
    }
    case "update-state": {
      const states = column(input.secondary);
      for (let g = 0; g + 1 < groups.length; g++) {
        const [start, end] = [groups[g], groups[g + 1]];
        const news = [];
        for (let i = start; i < end; i++) news.push(valueAt(vals, i));
        const state = g < states.n ? valueAt(states, g) : ABSENT;
        const next = refusing(start < end ? start : undefined, fn, news, state === ABSENT ? null : state);
        if (next === null || next === undefined) out.absent();
        else out.push(next);
      }
      return batch();
    }
  }
  if (kind === "map-state") {
    const states = column(input.secondary);
    const n = Math.max(groups.length - 1, 0);
    if (states.n !== n || keys.n !== vals.n) {
      throw new CallError("unsupported", `${n} groups, ${states.n} states, ${keys.n} keys, ${vals.n} values`);
    }
    const finals = [];
    for (let g = 0; g < n; g++) {
      const [start, end] = [groups[g], groups[g + 1]];
      if (start >= end || end > vals.n) {
        throw new CallError("unsupported", `group ${g} is empty or out of range (${start}..${end})`);
      }
      const prev = valueAt(states, g);
      const state = new State(prev === ABSENT ? null : prev);
      for (let i = start; i < end; i++) {
        let v = valueAt(vals, i);
        if (v === ABSENT) {
          state.timingOut = true;
          v = null;
        }
        const got = refusing(i, fn, valueAt(keys, i), v, state);
        if (got === null || got === undefined) out.absent();
        else out.push(got);
      }
      finals.push(state.timingOut ? null : state.value);
    }
    for (const f of finals) {
      if (f === null || f === undefined) out.absent();
      else out.push(f);
    }
    return batch();
  }
  throw new CallError("unsupported", `function kind ${kind} is not supported by ${SDK}`);
}

/** The canonical MessagePack encoding of `v`. */
export function pack(v) {
  const w = new Writer();
  encode(w, v);
  return w.buf.slice(0, w.len);
}

/** Decodes bytes holding exactly one value. */
export function unpack(buf) {
  const [v, end] = decode(buf, 0);
  if (end !== buf.length) throw new Error(`${buf.length - end} bytes after the value`);
  return v;
}
