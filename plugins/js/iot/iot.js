// The IoT device log of the socket lesson's end project, in JavaScript:
// `<timestamp> <device> power on|off` lines counted per device (the same
// functions as the Rust `plugins/iot`).
import * as sluice from "./sluice.js";

function parseLine(line) {
  const f = line.trim().split(/\s+/);
  if (f.length !== 4 || f[2] !== "power" || (f[3] !== "on" && f[3] !== "off")) return null;
  return [f[1], f[3]];
}

export const parse = sluice.flatMap((line) => {
  const parsed = parseLine(line);
  if (parsed === null) {
    if (line.trim() !== "") sluice.warn(`not a device action, skipped: ${JSON.stringify(line)}`);
    return [];
  }
  return [parsed];
}, "(device, on|off) for a well-formed line; a malformed one is logged and dropped.");

export const actions = sluice.flatMap(
  (line) => parse(line).map(([device]) => [device, 1]),
  "(device, 1) for every action of a well-formed line.",
);
export const add = sluice.reduce((a, b) => a + b, "Adds two counts.");
export const subtract = sluice.inverseReduce((a, b) => a - b, "Takes a count back out.");
export const active = sluice.filter(([, n]) => n > 0, "Keeps devices with at least one action.");

export default sluice.plugin({
  name: "iot",
  version: "0.1.0",
  functions: { parse, actions, add, subtract, active },
});
