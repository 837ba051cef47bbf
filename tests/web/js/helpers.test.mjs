// Formatting, error extraction, checksums and the /ws reconnection logic under Node.
import assert from 'node:assert/strict'
import { createHash, webcrypto } from 'node:crypto'
import { test } from 'node:test'
import { ChecksumHttpStack, checksumHeader, discoverChecksumAlgorithm, pickAlgorithm } from '../../../web/src/checksum.js'
import { OUTCOME_LABELS, describeUploadError, outcomeOf, parseErrorBody } from '../../../web/src/errors.js'
import { SpeedMeter, formatBytes, formatDuration, formatSpeed, summarizeResult } from '../../../web/src/format.js'
import { LiveEvents, eventsUrl } from '../../../web/src/live.js'

globalThis.crypto ??= webcrypto // Node 18 has no global Web Crypto

test('sizes, speeds and durations', () => {
  assert.equal(formatBytes(512), '512 B')
  assert.equal(formatBytes(10 * 1024 * 1024), '10.0 MiB')
  assert.equal(formatBytes(1536), '1.50 KiB')
  assert.equal(formatSpeed(null), '—')
  assert.equal(formatSpeed(2 * 1024 * 1024), '2.00 MiB/s')
  assert.equal(formatDuration(2), '2.00 s')
  assert.equal(formatDuration(125), '2:05')
  assert.equal(formatDuration(3725), '1:02:05')
})

test('speed over a sliding window', () => {
  const meter = new SpeedMeter(1000)
  assert.equal(meter.add(0, 0), null)
  assert.equal(meter.add(1000, 500), 2000)
  meter.add(3000, 1500)
  meter.add(4000, 2500)
  assert.equal(meter.speed(), 1000) // samples older than the window dropped: (4000 - 3000) B in 1 s
})

test('the result summary names the key metadata', () => {
  const rows = Object.fromEntries(
    summarizeResult({
      content_hash: 'ab'.repeat(32),
      fingerprint: '0123456789abcdef',
      metadata: { container: 'mov,mp4', duration: 2, bitrate: 1_500_000, size_bytes: 460213, video: { codec: 'h264', width: 160, height: 120, fps: 25 }, audio: [] },
      keyframes: { count: 1 },
      statistics: { scene_cuts: [1.2] },
      embeddings: { status: 'unavailable', model_type: 'resnet50', reason: 'no model file' },
      similar_videos: [{ video_id: 'abcdef0123', similarity: 0.9 }, { video_id: null, similarity: 0.75 }],
      processing_seconds: 0.4,
    }).map(([field, , text]) => [field, text]),
  )
  assert.equal(rows.resolution, '160×120')
  assert.equal(rows.video_codec, 'h264')
  assert.equal(rows.duration, '2.00 s')
  assert.equal(rows.fps, '25.00 fps')
  assert.equal(rows.audio, 'none')
  assert.equal(rows.bitrate, '1.50 Mbit/s')
  assert.equal(rows.scene_cuts, '1')
  assert.equal(rows.fingerprint, '0123456789abcdef')
  assert.equal(rows.embeddings, 'unavailable (no model file)')
  assert.equal(rows.similar_videos, 'abcdef01 (90 %), not yours (75 %)')
  assert.equal(summarizeResult({}).length, rows && Object.keys(rows).length)
})

const response = (status, body) => ({ getStatus: () => status, getBody: () => body })

test("the server's code and message come out of a tus error", () => {
  const refusal = JSON.stringify({ success: false, error: { code: 'extension_blocked', message: 'no .exe' } })
  assert.deepEqual(describeUploadError({ originalResponse: response(415, refusal) }), {
    status: 415,
    code: 'extension_blocked',
    message: 'no .exe',
  })
  assert.deepEqual(describeUploadError({ originalResponse: response(460, 'Checksum mismatch') }), {
    status: 460,
    code: 'checksum_mismatch',
    message: 'The server answered 460.',
  })
  assert.equal(describeUploadError(new Error('tus: failed to upload chunk, caused by [object ProgressEvent]')).code, 'network_error')
  assert.equal(parseErrorBody('{"detail": "Not Found"}').message, 'Not Found')
  assert.equal(parseErrorBody('<html>'), null)
})

test('the outcome of an error comes from its code, else from its status', () => {
  assert.equal(outcomeOf({ status: 415, code: 'format_mismatch' }), 'refused')
  assert.equal(outcomeOf({ status: null, code: 'format_mismatch' }), 'refused') // a /ws event has no status
  assert.equal(outcomeOf({ status: 422, code: 'undecodable_video' }), 'refused')
  assert.equal(outcomeOf({ status: 413, code: 'file_too_large' }), 'refused')
  assert.equal(outcomeOf({ status: 401, code: 'unauthenticated' }), 'refused')
  assert.equal(outcomeOf({ status: 415, code: 'a_code_this_page_does_not_know' }), 'refused')
  for (const code of [
    'network_error',
    'server_error',
    'internal_error',
    'insufficient_storage',
    'scanner_unavailable',
    'storage_unavailable',
    'storage_misconfigured',
  ])
    assert.equal(outcomeOf({ status: code === 'network_error' ? null : 503, code }), 'failed', code)
  assert.equal(outcomeOf({ status: 460, code: 'checksum_mismatch' }), 'failed')
  assert.equal(outcomeOf({ status: 410, code: 'upload_gone' }), 'failed')
  assert.equal(outcomeOf({ status: null, code: 'processing_failed' }), 'failed')
  assert.equal(outcomeOf({ status: null, code: 'session_expired' }), 'failed')
  // A tus error without our envelope gets its code from the status: the same word either way.
  assert.equal(outcomeOf(describeUploadError({ originalResponse: response(415, '') })), 'refused')
  assert.equal(outcomeOf(describeUploadError({ originalResponse: response(502, '') })), 'failed')
  assert.deepEqual(OUTCOME_LABELS, { refused: 'Refused', failed: 'Failed' })
})

test('checksum: algorithm choice and the header on requests with a body', async () => {
  assert.equal(pickAlgorithm('md5, sha1,sha256'), 'sha256')
  assert.equal(pickAlgorithm('crc32,sha1'), 'sha1')
  assert.equal(pickAlgorithm('md5'), null)
  assert.equal(pickAlgorithm(null), null)
  const body = Buffer.from('hello tus')
  const expected = createHash('sha256').update(body).digest('base64')
  assert.equal(await checksumHeader('sha256', body), `sha256 ${expected}`)
  assert.equal(await checksumHeader('sha1', new Blob([body])), `sha1 ${createHash('sha1').update(body).digest('base64')}`)

  const sent = []
  const inner = {
    getName: () => 'Fake',
    createRequest: (method, url) => {
      const headers = {}
      return {
        getMethod: () => method,
        getURL: () => url,
        setHeader: (k, v) => {
          headers[k] = v
        },
        getHeader: (k) => headers[k],
        setProgressHandler() {},
        send: async (b) => {
          sent.push({ method, headers: { ...headers }, b })
          return response(204, '')
        },
        abort: async () => {},
        getUnderlyingObject: () => null,
      }
    },
  }
  const stack = new ChecksumHttpStack(inner, 'sha256')
  assert.equal(stack.getName(), 'Fake+checksum(sha256)')
  await stack.createRequest('PATCH', '/u/1').send(body.subarray(0, 5))
  await stack.createRequest('HEAD', '/u/1').send(null)
  assert.equal(sent[0].headers['Upload-Checksum'], `sha256 ${createHash('sha256').update(body.subarray(0, 5)).digest('base64')}`)
  assert.equal(sent[1].headers['Upload-Checksum'], undefined)
})

test('checksum discovery reads the OPTIONS answer', async () => {
  const answer = (headers) => async () => ({ headers: new Headers(headers) })
  assert.equal(await discoverChecksumAlgorithm('/t/', answer({ 'Tus-Extension': 'creation,checksum', 'Tus-Checksum-Algorithm': 'sha1,sha256' })), 'sha256')
  assert.equal(await discoverChecksumAlgorithm('/t/', answer({ 'Tus-Extension': 'creation', 'Tus-Checksum-Algorithm': 'sha1' })), null)
  assert.equal(await discoverChecksumAlgorithm('/t/', async () => { throw new Error('offline') }), null)
})

class FakeSocket {
  static all = []
  constructor(url) {
    this.url = url
    this.sent = []
    FakeSocket.all.push(this)
  }
  send(text) {
    this.sent.push(JSON.parse(text))
  }
  close() {}
}

test('/ws: events, then a reconnect that asks for what was missed', async () => {
  assert.equal(eventsUrl({ protocol: 'https:', host: 'v.example:8443' }, 'vg_a b'), 'wss://v.example:8443/ws?api_key=vg_a%20b&subscribe=all')
  assert.equal(eventsUrl({ protocol: 'http:', host: 'h' }, 'k', 41), 'ws://h/ws?api_key=k&subscribe=all&since=41')
  const events = []
  const states = []
  const live = new LiveEvents({
    url: () => 'ws://x/ws',
    onEvent: (e) => events.push(e),
    onState: (s, detail) => states.push(detail ? `${s}:${detail}` : s),
    openSubjects: () => [{ video_id: 'v1', since: 7 }],
    WebSocketImpl: FakeSocket,
  })
  live.start()
  const first = FakeSocket.all.at(-1)
  first.onopen()
  assert.deepEqual(first.sent, []) // the first connection subscribes by query string only
  first.onmessage({ data: '{"event_type":"heartbeat"}' })
  first.onmessage({ data: 'not json' })
  assert.deepEqual(events, [{ event_type: 'heartbeat' }])
  first.onclose({ code: 4008, reason: 'the client could not keep up' })
  await new Promise((resolve) => setTimeout(resolve, 10)) // 4008: reconnect at once
  const second = FakeSocket.all.at(-1)
  assert.notEqual(second, first)
  second.onopen()
  assert.deepEqual(second.sent, [{ action: 'subscribe', video_id: 'v1', since: 7 }])
  live.stop()
  assert.deepEqual(states, ['connecting', 'open', 'closed:fell behind; catching up', 'connecting', 'open'])
})
