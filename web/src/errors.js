// Turn what tus-js-client reports into the server's own words: {status, code, message}.

/** Parse the server's error envelope {"success": false, "error": {"code", "message"}}. */
export function parseErrorBody(text) {
  if (!text) return null
  try {
    const body = JSON.parse(text)
    const error = body?.error
    if (error && typeof error.code === 'string') {
      return { code: error.code, message: String(error.message ?? '') }
    }
    if (typeof body?.detail === 'string') return { code: null, message: body.detail }
  } catch {
    // not JSON: fall through
  }
  return null
}

const STATUS_CODES = {
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  410: 'gone',
  412: 'precondition_failed',
  413: 'too_large',
  415: 'unsupported_media_type',
  422: 'invalid_content',
  460: 'checksum_mismatch',
  507: 'insufficient_storage',
}

/** What went wrong with an upload, from a tus-js-client error (a DetailedError or any Error). */
export function describeUploadError(err) {
  const res = err?.originalResponse ?? null
  if (res) {
    const status = res.getStatus()
    const parsed = parseErrorBody(res.getBody())
    if (parsed?.code) return { status, code: parsed.code, message: parsed.message }
    return {
      status,
      code: STATUS_CODES[status] ?? (status >= 500 ? 'server_error' : `http_${status}`),
      message: parsed?.message || `The server answered ${status}.`,
    }
  }
  const text = String(err?.message ?? err ?? 'unknown error')
  // tus-js-client appends ", caused by [object ProgressEvent]" etc.: keep the first clause.
  return { status: null, code: 'network_error', message: text.split(', caused by')[0] }
}
