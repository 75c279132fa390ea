// Validates Argo Workflow YAML files against the Workflow schema of
// @kubernetes-models/argo-workflows: `node .ci/argo-validate.mjs FILE...`.
// Installed by .ci/run into target/ci-tools/npm (NODE_PATH points there).
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
const require = createRequire(process.env.NODE_PATH + "/");
const yaml = require("js-yaml");
// The package is ESM with an exports map: import its file by path.
const { Workflow } = await import(
  process.env.NODE_PATH + "/@kubernetes-models/argo-workflows/argoproj.io/v1alpha1/index.js"
);
let failed = false;
for (const file of process.argv.slice(2)) {
  const doc = yaml.load(readFileSync(file, "utf8"));
  try {
    new Workflow(doc).validate();
    console.log(`${file}: a valid Argo Workflow (${doc.spec.templates.length} templates)`);
  } catch (e) {
    failed = true;
    console.error(`${file}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
