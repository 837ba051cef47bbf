// Bundle the page into src/vidgate/web/static (or --outdir DIR): app.js (esbuild, with
// tus-js-client inside), index.html and style.css copied. Deterministic: same sources and
// lockfile, same bytes.
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const at = process.argv.indexOf('--outdir')
const outdir = resolve(at > 0 ? process.argv[at + 1] : join(here, '..', 'src', 'vidgate', 'web', 'static'))
mkdirSync(outdir, { recursive: true })

await build({
  entryPoints: [join(here, 'src', 'app.js')],
  outfile: join(outdir, 'app.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2022'],
  minify: false,
  legalComments: 'eof',
  charset: 'utf8',
  absWorkingDir: here,
  logLevel: 'warning',
})
for (const name of ['index.html', 'style.css']) copyFileSync(join(here, 'src', name), join(outdir, name))
console.log(`web page built into ${outdir}`)
