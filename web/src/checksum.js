// tus checksum extension for tus-js-client, which has no option for it: an HttpStack wrapper
// that adds `Upload-Checksum: <algorithm> <base64 digest>` to every request carrying data.
// Uses Web Crypto (browsers in a secure context, and Node >= 18 as globalThis.crypto).

const WEB_CRYPTO = {
  sha256: 'SHA-256',
  'sha-256': 'SHA-256',
  sha512: 'SHA-512',
  'sha-512': 'SHA-512',
  sha384: 'SHA-384',
  'sha-384': 'SHA-384',
  sha1: 'SHA-1',
  'sha-1': 'SHA-1',
}
const PREFERENCE = ['sha256', 'sha-256', 'sha512', 'sha-512', 'sha384', 'sha-384', 'sha1', 'sha-1']

export function hasWebCrypto() {
  return typeof globalThis.crypto?.subtle?.digest === 'function'
}

/** The best algorithm both sides know, from the server's Tus-Checksum-Algorithm header. */
export function pickAlgorithm(header) {
  if (!header || !hasWebCrypto()) return null
  const offered = header
    .split(',')
    .map((name) => name.trim().toLowerCase())
    .filter(Boolean)
  return PREFERENCE.find((name) => offered.includes(name)) ?? null
}

/** Ask the server (OPTIONS on the tus endpoint) which checksum algorithms it accepts. */
export async function discoverChecksumAlgorithm(endpoint, fetchImpl = globalThis.fetch) {
  try {
    const res = await fetchImpl(endpoint, { method: 'OPTIONS', headers: { 'Tus-Resumable': '1.0.0' } })
    const extensions = (res.headers.get('Tus-Extension') ?? '').split(',').map((s) => s.trim())
    if (!extensions.includes('checksum')) return null
    return pickAlgorithm(res.headers.get('Tus-Checksum-Algorithm'))
  } catch {
    return null
  }
}

async function bytesOf(body) {
  if (body instanceof Uint8Array) return body // Node's Buffer too
  if (body instanceof ArrayBuffer) return new Uint8Array(body)
  if (typeof body?.arrayBuffer === 'function') return new Uint8Array(await body.arrayBuffer()) // Blob
  return null // a stream: cannot be hashed ahead of sending
}

function toBase64(bytes) {
  let text = ''
  for (const byte of bytes) text += String.fromCharCode(byte)
  return btoa(text)
}

export async function checksumHeader(algorithm, body) {
  const bytes = await bytesOf(body)
  if (bytes == null) return null
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest(WEB_CRYPTO[algorithm], bytes))
  return `${algorithm} ${toBase64(digest)}`
}

class ChecksumRequest {
  constructor(inner, algorithm) {
    this.inner = inner
    this.algorithm = algorithm
  }

  getMethod() {
    return this.inner.getMethod()
  }

  getURL() {
    return this.inner.getURL()
  }

  setHeader(name, value) {
    this.inner.setHeader(name, value)
  }

  getHeader(name) {
    return this.inner.getHeader(name)
  }

  setProgressHandler(handler) {
    this.inner.setProgressHandler(handler)
  }

  async send(body = null) {
    if (body != null) {
      const header = await checksumHeader(this.algorithm, body)
      if (header) this.inner.setHeader('Upload-Checksum', header)
    }
    return this.inner.send(body)
  }

  abort() {
    return this.inner.abort()
  }

  getUnderlyingObject() {
    return this.inner.getUnderlyingObject()
  }
}

export class ChecksumHttpStack {
  constructor(inner, algorithm) {
    this.inner = inner
    this.algorithm = algorithm
  }

  createRequest(method, url) {
    return new ChecksumRequest(this.inner.createRequest(method, url), this.algorithm)
  }

  getName() {
    return `${this.inner.getName()}+checksum(${this.algorithm})`
  }
}
