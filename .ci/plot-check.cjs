// Render a `dvc plots show --json` spec headless with Vega (no browser, no CDN) and print
// what was drawn as JSON: {"lines": line marks, "points": data rows kept, "rows": rows given}.
// vega and vega-lite come from .ci/.tools (tests/test_ci_scripts.py installs them from npm).
const fs = require("node:fs");
const path = require("node:path");
const tools = path.join(__dirname, ".tools", "node_modules");
const vega = require(path.join(tools, "vega"));
const vl = require(path.join(tools, "vega-lite"));

const doc = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const spec = Object.values(doc.data)[0][0].content;
const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" });
view.toSVG().then((svg) => {
  const lines = (svg.match(/aria-roledescription="line mark"/g) || []).length;
  const kept = (view.data("data_0") || []).length;
  console.log(JSON.stringify({ lines, points: kept, rows: spec.data.values.length }));
});
