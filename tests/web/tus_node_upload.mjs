// Upload one file with tus-js-client under Node (the same client and checksum code the page
// bundles) and print one JSON line describing what happened. Used by test_tus_node.py.
//
//   node tus_node_upload.mjs --endpoint URL --key KEY --file PATH [--name NAME] [--type MIME]
//        [--parallel N] [--chunk-size BYTES] [--checksum] [--corrupt-checksum] [--priority N]
import { webcrypto } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename } from 'node:path'
import { parseArgs } from 'node:util'
import { ChecksumHttpStack, discoverChecksumAlgorithm } from '../../web/src/checksum.js'
import { describeUploadError } from '../../web/src/errors.js'

globalThis.crypto ??= webcrypto // Node 18 has no global Web Crypto
const require = createRequire(new URL('../../web/package.json', import.meta.url))
const tus = require('tus-js-client') // web/node_modules (scripts/build-web runs npm ci)

const { values: args } = parseArgs({
  options: {
    endpoint: { type: 'string' },
    key: { type: 'string' },
    file: { type: 'string' },
    name: { type: 'string' },
    type: { type: 'string', default: 'video/mp4' },
    parallel: { type: 'string', default: '1' },
    'chunk-size': { type: 'string' },
    priority: { type: 'string' },
    checksum: { type: 'boolean', default: false },
    'corrupt-checksum': { type: 'boolean', default: false },
  },
})

/** Records every request, and can spoil the checksum to see the server refuse it. */
class RecordingStack {
  constructor(inner, log, corrupt) {
    Object.assign(this, { inner, log, corrupt })
  }
  getName() {
    return `Recording(${this.inner.getName()})`
  }
  createRequest(method, url) {
    const req = this.inner.createRequest(method, url)
    const { log, corrupt } = this
    const record = { method, url, checksum: null, status: null }
    return {
      getMethod: () => req.getMethod(),
      getURL: () => req.getURL(),
      setHeader(name, value) {
        if (name === 'Upload-Checksum') {
          record.checksum = value
          if (corrupt) value = value.replace(/ ./, (m) => ` ${m[1] === 'A' ? 'B' : 'A'}`)
        }
        req.setHeader(name, value)
      },
      getHeader: (name) => req.getHeader(name),
      setProgressHandler: (handler) => req.setProgressHandler(handler),
      async send(body) {
        record.bytes = body ? body.length : 0
        log.push(record)
        const res = await req.send(body)
        record.status = res.getStatus()
        return res
      },
      abort: () => req.abort(),
      getUnderlyingObject: () => req.getUnderlyingObject(),
    }
  }
}

const data = readFileSync(args.file)
const log = []
const algorithm = args.checksum || args['corrupt-checksum'] ? await discoverChecksumAlgorithm(args.endpoint) : null
let stack = new RecordingStack(new tus.DefaultHttpStack(), log, args['corrupt-checksum'])
if (algorithm) stack = new ChecksumHttpStack(stack, algorithm)

const metadata = { filename: args.name ?? basename(args.file), filetype: args.type }
if (args.priority) metadata.priority = args.priority
let completion = null

const outcome = await new Promise((resolve) => {
  const upload = new tus.Upload(data, {
    endpoint: args.endpoint,
    headers: { 'X-API-Key': args.key },
    metadata,
    parallelUploads: Number(args.parallel),
    chunkSize: args['chunk-size'] ? Number(args['chunk-size']) : Number.POSITIVE_INFINITY,
    retryDelays: [0, 500],
    httpStack: stack,
    onAfterResponse: (_req, res) => {
      const videoId = res.getHeader('Vidgate-Video-Id')
      if (videoId)
        completion = {
          session_id: res.getHeader('Vidgate-Session-Id') ?? null,
          video_id: videoId,
          duplicate: res.getHeader('Vidgate-Duplicate') ?? null,
        }
    },
    onSuccess: () => resolve({ ok: true, url: upload.url }),
    onError: (err) => {
      const res = err.originalResponse
      resolve({
        ok: false,
        url: upload.url,
        error: describeUploadError(err),
        body: res ? res.getBody() : null,
        detail: String(err.message ?? err),
      })
    },
  })
  upload.start()
})

console.log(JSON.stringify({ ...outcome, completion, algorithm, size: data.length, requests: log }))
