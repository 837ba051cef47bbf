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

// One word per kind of error, everywhere on the page (badge, heading, progress bar), decided by
// the server's code. "Refused": the server will not take this file or request as sent (its
// content, name, size or the request itself): sending the same again cannot succeed. "Failed":
// anything else (the network, the server, storage, an expired session, processing), where
// trying again later may work. These are the server's codes answered with 400, 401, 403, 413,
// 415 and 422 (tests/web/test_js_units.py checks the list against vidgate.errors). The 503s
// (scanner_unavailable, storage_unavailable, storage_misconfigured: the server kept the upload
// and stores it when the scanner or the object store is back; lock_unavailable: the upload
// locks' Redis is down, nothing was written and the chunk is sent again) are "Failed", by their status.
export const REFUSAL_CODES = new Set([
  'bad_request',
  'invalid_parameter',
  'invalid_options',
  'missing_file',
  'malformed_multipart',
  'chunk_index_out_of_range',
  'total_chunks_mismatch',
  'chunk_size_mismatch',
  'empty_chunk',
  'invalid_filename',
  'unauthenticated',
  'forbidden',
  'final_upload_immutable',
  'too_large',
  'file_too_large',
  'chunk_too_large',
  'too_many_chunks',
  'unsupported_media_type',
  'extension_not_allowed',
  'extension_blocked',
  'unrecognized_format',
  'format_mismatch',
  'invalid_content_type',
  'invalid_content',
  'file_hash_mismatch',
  'dangerous_content',
  'trailing_data',
  'truncated_file',
  'no_video_stream',
  'undecodable_video',
  'duration_too_long',
  'dimensions_too_large',
  'malware_detected',
  'insufficient_role',
  'invalid_cursor',
  'invalid_range',
  // the library desk (issue 19)
  'invalid_url_signature',
  'url_expired',
])
export const REFUSAL_STATUSES = new Set([400, 401, 403, 413, 415, 422])

export const OUTCOME_LABELS = { refused: 'Refused', failed: 'Failed' }

/** 'refused' or 'failed' for an error {status, code}: by its code, else (a code this page does
 * not know yet) by its HTTP status. */
export function outcomeOf(error) {
  return REFUSAL_CODES.has(error?.code) || REFUSAL_STATUSES.has(error?.status) ? 'refused' : 'failed'
}
