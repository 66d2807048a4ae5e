// Tally results files the way the HTTP caching test suite lists them: one line of JSON per file.
//
//   node conformance_tally.mjs SUITE_DIR results1.json [results2.json ...]
//   node conformance_tally.mjs SUITE_DIR --published   (the suite's own results/, browsers left out)
//
// For each file: {"file", "required": [passed, run], "optimal": [passed, run],
// "failing": [[id, kind, reason], ...]}. A test passes when its own result is true (dependencies
// are not followed, as in the published per-test counts); tests a file does not hold are not run.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ...files] = process.argv.slice(2)
const load = (rel) => import(pathToFileURL(path.join(suiteDir, rel)).href)
const tests = (await load('tests/index.mjs')).default

let runs = files.map(file => ({ file }))
if (files[0] === '--published') {
  const index = (await load('results/index.mjs')).default
  runs = index.filter(item => item.type !== 'browser')
    .map(item => ({ file: path.join(suiteDir, 'results', item.file), name: item.name, version: item.version }))
}

for (const run of runs) {
  const results = JSON.parse(fs.readFileSync(run.file, 'utf-8'))
  const tally = { ...run, required: [0, 0], optimal: [0, 0], failing: [] }
  for (const suite of tests) {
    for (const test of suite.tests) {
      const kind = test.kind || 'required'
      const result = results[test.id]
      if (result === undefined || !(kind in tally)) continue
      tally[kind][1] += 1
      if (result === true) {
        tally[kind][0] += 1
      } else {
        const reason = Array.isArray(result) ? result.join(': ') : String(result)
        tally.failing.push([test.id, kind, reason])
      }
    }
  }
  console.log(JSON.stringify(tally))
}
