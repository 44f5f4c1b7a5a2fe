// The word count of Spark Streaming's socket example, in JavaScript: the
// same functions as the Rust `plugins/wordcount`.
import * as sluice from "./sluice.js";

export const split = sluice.flatMap((line) => line.split(" "), "Splits a line into words on single spaces.");
export const pair = sluice.map((word) => [word, 1], "Pairs a word with the count 1.");
export const add = sluice.reduce((a, b) => a + b, "Adds two counts.");
export const subtract = sluice.inverseReduce((total, gone) => total - gone, "Takes a count back out of a total.");
export const positive = sluice.filter(([, count]) => count > 0, "Keeps counts above zero.");
export const running_total = sluice.updateState(
  (news, total) => news.reduce((a, b) => a + b, 0) + (total ?? 0),
  "A running count: the batch's new counts added to the total so far.",
);

export const running_count = sluice.mapState((word, one, count) => {
  const total = count.get() ?? 0;
  if (one === null) return [word, total, true];
  count.update(total + one);
  return [word, total + one, false];
}, "Per occurrence, the word's running count; [word, count, true] when it times out.");

export default sluice.plugin({
  name: "wordcount",
  version: "0.1.0",
  functions: { split, pair, add, subtract, positive, running_total, running_count },
});
