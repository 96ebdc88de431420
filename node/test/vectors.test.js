// The Node codec against tests/vectors/baggage.json, the examples the Python codec is checked
// against too (tests/test_header_vectors.py): both tiers stay byte-compatible.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const bridge = require("..");

const VECTORS = JSON.parse(
  fs.readFileSync(path.join(__dirname, "..", "..", "tests", "vectors", "baggage.json"), "utf8"),
);

test("the vector file is not empty", () => {
  for (const group of ["encode", "decode", "prompt_from_baggage", "prompt_headers", "gateways"]) {
    assert.ok(VECTORS[group].length >= 3, group);
  }
});

for (const { name, members, header } of VECTORS.encode) {
  test(`encode: ${name}`, () => {
    assert.equal(bridge.formatBaggage(members), header);
  });
}

for (const { name, header, members } of VECTORS.decode) {
  test(`decode: ${name}`, () => {
    assert.deepEqual(bridge.parseBaggage(header).map((m) => [...m]), members);
  });
}

for (const { name, header, prompt } of VECTORS.prompt_from_baggage) {
  test(`prompt from baggage: ${name}`, () => {
    const found = bridge.promptFromMembers(bridge.parseBaggage(header));
    assert.deepEqual(found === null ? null : { ...found }, prompt);
  });
}

for (const { prompt, header } of VECTORS.prompt_headers) {
  test(`prompt header: ${prompt.name}`, () => {
    assert.equal(bridge.formatBaggage(bridge.promptMembers(bridge.toPromptRef(prompt))), header);
    assert.deepEqual({ ...bridge.promptFromMembers(bridge.parseBaggage(header)) }, prompt);
  });
}

for (const { value, origins, error } of VECTORS.gateways) {
  test(`gateways: ${JSON.stringify(value)}`, () => {
    if (error) {
      assert.throws(() => bridge.parseGateways(value), /gateway/);
      return;
    }
    const parsed = bridge
      .parseGateways(value)
      .map((o) => [o.scheme, o.host, o.port])
      .sort((a, b) => String(a).localeCompare(String(b)));
    assert.deepEqual(parsed, origins);
  });
}
