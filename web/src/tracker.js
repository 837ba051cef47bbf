// The page's model: one entry per chosen file, moved along by the tus upload, the live events
// from /ws and the video/result endpoints. No DOM here (tested under Node); `onChange(entry)`
// tells the view which entry to redraw.
//
// States: queued -> uploading (<-> paused) -> processing -> done | error | cancelled.
// A duplicate ends as `done` with `duplicate: true` (and the cached result). An `error` entry
// has `error` {status, code, message} and `outcome` ('refused' or 'failed', from the code).

import { OUTCOME_LABELS, outcomeOf } from './errors.js'

const PENDING_LIMIT = 500
const SEEN_LIMIT = 5000

export const FINAL_STATES = new Set(['done', 'error', 'cancelled'])

// What an event about processing implies: every byte is on the server.
const UPLOADED = (entry) => ({ state: 'processing', bytesSent: entry.size, speed: null })

export class Tracker {
  constructor(onChange = () => {}) {
    this.onChange = onChange
    this.entries = new Map() // local id -> entry
    this.nextId = 1
    this.pending = [] // events for sessions/videos not yet tied to an entry
    this.seen = new Set() // event ids already applied
    this.sequences = new Map() // subject ("session:ID" / "video:ID") -> last sequence seen
    this.lastSequence = null // the last number of the user's stream seen (null: none yet)
  }

  add(file) {
    const entry = {
      id: `f${this.nextId++}`,
      name: file.name,
      size: file.size,
      type: file.type || '',
      state: 'queued',
      bytesSent: 0,
      speed: null,
      sessionId: null,
      videoId: null,
      duplicate: false,
      stage: null,
      processingProgress: null,
      result: null,
      error: null,
      outcome: null,
      note: 'Waiting to upload',
    }
    this.entries.set(entry.id, entry)
    this.onChange(entry)
    return entry
  }

  get(id) {
    return this.entries.get(id)
  }

  bySession(sessionId) {
    return [...this.entries.values()].filter((e) => e.sessionId === sessionId)
  }

  byVideo(videoId) {
    return [...this.entries.values()].filter((e) => e.videoId === videoId)
  }

  /** Subjects worth resubscribing to after a reconnect, with the last sequence seen. */
  openSubjects() {
    const subjects = []
    for (const entry of this.entries.values()) {
      if (FINAL_STATES.has(entry.state)) continue
      if (entry.videoId) subjects.push({ video_id: entry.videoId, since: this.sequences.get(`video:${entry.videoId}`) ?? 0 })
      else if (entry.sessionId)
        subjects.push({ session_id: entry.sessionId, since: this.sequences.get(`session:${entry.sessionId}`) ?? 0 })
    }
    return subjects
  }

  #update(entry, changes) {
    if (FINAL_STATES.has(entry.state) && !changes.force) return
    delete changes.force
    Object.assign(entry, changes)
    this.onChange(entry)
  }

  /** The one way into the error state: the outcome and its word come from the error's code. */
  #fail(entry, { status = null, code, message }) {
    if (entry.state === 'error' && entry.error?.code === code) {
      // The same refusal heard twice (the socket's event or the session view, then the HTTP
      // answer, in either order): keep it, adding the HTTP status the first one lacked.
      if (status && !entry.error.status) this.#update(entry, { error: { ...entry.error, status }, force: true })
      return
    }
    const outcome = outcomeOf({ status, code })
    this.#update(entry, { state: 'error', speed: null, error: { status, code, message }, outcome, note: OUTCOME_LABELS[outcome] })
  }

  uploadStarted(id, sessionId) {
    const entry = this.get(id)
    if (!entry) return
    this.#update(entry, { state: 'uploading', sessionId: sessionId ?? entry.sessionId, note: 'Uploading' })
    this.#drain()
  }

  progress(id, bytesSent, speed) {
    const entry = this.get(id)
    if (!entry || entry.state !== 'uploading') return
    this.#update(entry, { bytesSent, speed })
  }

  paused(id, paused) {
    const entry = this.get(id)
    if (!entry) return
    if (paused && entry.state === 'uploading') this.#update(entry, { state: 'paused', speed: null, note: 'Paused' })
    if (!paused && entry.state === 'paused') this.#update(entry, { state: 'uploading', note: 'Uploading' })
  }

  cancelled(id) {
    const entry = this.get(id)
    if (entry) this.#update(entry, { state: 'cancelled', speed: null, note: 'Cancelled' })
  }

  /** The upload's bytes are all on the server (from the completing response's headers). */
  uploadFinished(id, { sessionId, videoId, duplicate }) {
    const entry = this.get(id)
    if (!entry) return
    this.#update(entry, {
      state: 'processing',
      bytesSent: entry.size,
      speed: null,
      sessionId: sessionId ?? entry.sessionId,
      videoId: videoId ?? entry.videoId,
      duplicate: Boolean(duplicate) || entry.duplicate,
      note: duplicate ? 'Already uploaded: fetching the cached result' : 'Uploaded: waiting for processing',
    })
    this.#drain()
  }

  /** The session view (GET /v1/upload/video/session/{id}), for what the headers did not say. */
  sessionView(id, view) {
    const entry = this.get(id)
    if (!entry || !view) return
    if (view.status === 'failed' || view.status === 'expired' || view.status === 'cancelled') {
      this.failed(id, { code: view.error_code ?? view.status, message: view.error_message ?? `The upload is ${view.status}.` })
      return
    }
    const changes = {}
    if (view.video_id && !entry.videoId) changes.videoId = view.video_id
    if (view.duplicate && !entry.duplicate) changes.duplicate = true
    if (Object.keys(changes).length) this.#update(entry, changes)
    this.#drain()
  }

  failed(id, error) {
    const entry = this.get(id)
    if (entry) this.#fail(entry, error)
  }

  /** GET /v1/videos/{id}: returns true when the result is ready to be fetched. */
  videoStatus(videoId, view) {
    let ready = false
    for (const entry of this.byVideo(videoId)) {
      if (FINAL_STATES.has(entry.state)) continue
      if (view.status === 'completed') ready = true
      else if (view.status === 'failed')
        this.#fail(entry, { code: 'processing_failed', message: view.error_message ?? 'Processing failed.' })
      else this.#update(entry, { stage: view.stage ?? view.status, processingProgress: view.progress ?? null, note: `Processing: ${view.stage ?? view.status}` })
    }
    return ready
  }

  result(videoId, result) {
    for (const entry of this.byVideo(videoId)) {
      if (!FINAL_STATES.has(entry.state) || (entry.state === 'done' && !entry.result))
        this.#update(entry, {
          ...UPLOADED(entry),
          state: 'done',
          result,
          processingProgress: 1,
          stage: 'done',
          note: entry.duplicate ? 'Already uploaded: cached result' : 'Processing done',
          force: true,
        })
    }
  }

  /** One event from /ws. Returns the video ids whose result should now be fetched. */
  event(event) {
    if (!event || event.event_type === 'heartbeat') return []
    // Events the server no longer keeps were missed: the page asks the server where each file
    // stands (followUp over HTTP); nothing to apply here.
    if (event.event_type === 'events_expired') return []
    if (event.event_id) {
      if (this.seen.has(event.event_id)) return []
      this.seen.add(event.event_id)
      if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value)
    }
    const subject = event.session_id ? `session:${event.session_id}` : event.video_id ? `video:${event.video_id}` : null
    if (subject && event.sequence) this.sequences.set(subject, Math.max(event.sequence, this.sequences.get(subject) ?? 0))
    if (event.sequence) this.lastSequence = Math.max(event.sequence, this.lastSequence ?? 0)
    const applied = this.#apply(event)
    if (applied === null) {
      this.pending.push(event)
      if (this.pending.length > PENDING_LIMIT) this.pending.shift()
      return []
    }
    return applied
  }

  #drain() {
    const waiting = this.pending
    this.pending = []
    for (const event of waiting) {
      if (this.#apply(event) === null) this.pending.push(event)
    }
  }

  /** Apply an event to its entries; null when no entry is known for it yet. */
  #apply(event) {
    const data = event.data ?? {}
    // Upload events (and a duplicate notice) concern one session; processing events concern every
    // entry of the video, duplicates included.
    const targets = event.session_id ? this.bySession(event.session_id) : []
    const aboutVideo = event.event_type.startsWith('processing_') || !event.session_id
    if (aboutVideo && event.video_id) for (const e of this.byVideo(event.video_id)) if (!targets.includes(e)) targets.push(e)
    if (targets.length === 0) return null
    const fetchResults = []
    for (const entry of targets) {
      switch (event.event_type) {
        case 'upload_progress':
          if (entry.state === 'uploading' && data.bytes_received > entry.bytesSent)
            this.#update(entry, { bytesSent: data.bytes_received })
          break
        case 'upload_completed':
          if (data.video_id && !entry.videoId) this.#update(entry, { videoId: data.video_id })
          break
        case 'upload_failed':
        case 'session_expired':
          this.#fail(entry, {
            code: data.error_code ?? event.event_type,
            message: data.message ?? (event.event_type === 'session_expired' ? 'The upload session expired.' : 'The upload failed.'),
          })
          break
        case 'duplicate_detected': {
          const changes = { duplicate: true, videoId: data.video_id ?? entry.videoId }
          if (data.cached_result && !FINAL_STATES.has(entry.state)) {
            Object.assign(changes, {
              state: 'done',
              bytesSent: entry.size,
              speed: null,
              result: data.cached_result,
              processingProgress: 1,
              stage: 'done',
              note: 'Already uploaded: cached result',
            })
          } else if (!FINAL_STATES.has(entry.state)) {
            changes.note = 'Already uploaded: waiting for the first upload to be processed'
            if (data.video_id) fetchResults.push(data.video_id)
          }
          this.#update(entry, changes)
          break
        }
        case 'processing_initiated':
          if (!FINAL_STATES.has(entry.state))
            this.#update(entry, { ...UPLOADED(entry), stage: 'queued', note: 'Processing started' })
          break
        case 'processing_progress':
          if (!FINAL_STATES.has(entry.state))
            this.#update(entry, {
              ...UPLOADED(entry),
              stage: data.stage,
              processingProgress: (data.progress_percentage ?? 0) / 100,
              note: `Processing: ${data.stage}`,
            })
          break
        case 'processing_completed':
          if (!FINAL_STATES.has(entry.state)) {
            if (data.result) {
              this.#update(entry, {
                ...UPLOADED(entry),
                state: 'done',
                result: data.result,
                processingProgress: 1,
                stage: 'done',
                note: entry.duplicate ? 'Already uploaded: cached result' : 'Processing done',
              })
            } else if (event.video_id) fetchResults.push(event.video_id)
          }
          break
        case 'processing_failed':
          this.#fail(entry, { code: data.error_code ?? 'processing_failed', message: data.message ?? 'Processing failed.' })
          break
        default:
          break
      }
    }
    return fetchResults
  }
}
