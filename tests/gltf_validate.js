// Runs the Khronos glTF validator (npm gltf-validator, installed with `npm install --prefix .node
// gltf-validator`) on one .glb and prints its report's issue counts and codes as one JSON line, so a
// Python test can read them without parsing the validator's whole report.
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require(path.join(__dirname, "..", ".node", "node_modules", "gltf-validator"));

const file = process.argv[2];
validator.validateBytes(new Uint8Array(fs.readFileSync(file)), { maxIssues: 0 })
  .then((report) => {
    const codes = {};
    for (const m of report.issues.messages) {
      codes[m.code] = (codes[m.code] || 0) + 1;
    }
    const { numErrors, numWarnings, numInfos, numHints } = report.issues;
    console.log(JSON.stringify({ numErrors, numWarnings, numInfos, numHints, codes }));
  })
  .catch((err) => {
    console.error(`gltf-validator could not read ${file}: ${err}`);
    process.exit(2);
  });
