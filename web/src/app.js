// The upload page: API key, file choice (drop or picker), tus uploads with progress and speed,
// then live processing status from /ws and the results. Bundled by scripts/build-web.

import { DefaultHttpStack, Upload } from 'tus-js-client'
import { ChecksumHttpStack, discoverChecksumAlgorithm } from './checksum.js'
import { OUTCOME_LABELS, describeUploadError, parseErrorBody } from './errors.js'
import { FINAL_STATES, Tracker } from './tracker.js'
import { LiveEvents, eventsUrl } from './live.js'
import { SpeedMeter, formatBytes, formatDuration, formatPercent, formatSpeed, summarizeResult } from './format.js'
import { Library } from './library.js'

const KEY_STORAGE = 'vidgate.apiKey'
const OPTIONS_STORAGE = 'vidgate.uploadOptions'
const TUS_ENDPOINT = new URL('/v1/tus/', window.location.href).href
const MAX_ACTIVE_UPLOADS = 2
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000]
const MiB = 1024 * 1024

const $ = (selector, root = document) => root.querySelector(selector)

const ui = {
  keyInput: $('#api-key'),
  keyToggle: $('#toggle-key'),
  keyStatus: $('#api-key-status'),
  chunkSize: $('#chunk-size'),
  priority: $('#priority'),
  parallel: $('#parallel'),
  checksum: $('#checksum'),
  dropzone: $('#dropzone'),
  fileInput: $('#file-input'),
  liveStatus: $('#live-status'),
  list: $('#uploads'),
  empty: $('#empty-note'),
  template: $('#upload-template'),
}

// ---------------------------------------------------------------- state

const uploads = new Map() // entry id -> {file, upload, meter, completion}
const items = new Map() // entry id -> <li>
const tracker = new Tracker((entry) => render(entry))
let checksumAlgorithm = null // asked once, before the first upload starts
let checksumDiscovery = null
const live = new LiveEvents({
  url: () => eventsUrl(window.location, apiKey(), tracker.lastSequence),
  onEvent: (event) => {
    if (event.event_type === 'events_expired') {
      // what was missed is no longer kept: ask the server where each file stands
      for (const entry of tracker.entries.values()) followUp(entry.id)
      return
    }
    for (const videoId of tracker.event(event)) fetchResult(videoId)
    library.onEvent(event)
  },
  onState: (state, detail) => {
    ui.liveStatus.dataset.state = state
    ui.liveStatus.textContent =
      state === 'open'
        ? 'Live updates: connected'
        : state === 'connecting'
          ? 'Live updates: connecting…'
          : `Live updates: disconnected${detail ? ` (${detail})` : ''}, retrying`
  },
  openSubjects: () => tracker.openSubjects(),
})

function apiKey() {
  return ui.keyInput.value.trim()
}

function authHeaders() {
  return { 'X-API-Key': apiKey() }
}

async function getJson(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...(init.headers ?? {}), ...authHeaders() } })
  const text = await res.text()
  if (!res.ok) {
    const error = parseErrorBody(text) ?? { code: `http_${res.status}`, message: text }
    throw Object.assign(new Error(error.message), { status: res.status, code: error.code })
  }
  return JSON.parse(text).data
}

const library = new Library({ request: getJson })

// ---------------------------------------------------------------- settings

function loadSettings() {
  ui.keyInput.value = localStorage.getItem(KEY_STORAGE) ?? ''
  try {
    const saved = JSON.parse(localStorage.getItem(OPTIONS_STORAGE) ?? '{}')
    for (const name of ['chunkSize', 'priority', 'parallel']) if (saved[name] != null) ui[name].value = saved[name]
    if (saved.checksum != null) ui.checksum.checked = Boolean(saved.checksum)
  } catch {
    localStorage.removeItem(OPTIONS_STORAGE)
  }
}

function saveOptions() {
  localStorage.setItem(
    OPTIONS_STORAGE,
    JSON.stringify({
      chunkSize: ui.chunkSize.value,
      priority: ui.priority.value,
      parallel: ui.parallel.value,
      checksum: ui.checksum.checked,
    }),
  )
}

function uploadOptions() {
  const clamp = (input, low, high, fallback, parse = (text) => Number.parseInt(text, 10)) => {
    const value = parse(input.value)
    return Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : fallback
  }
  return {
    chunkSize: Math.round(clamp(ui.chunkSize, 1 / 16, 1024, 10, Number.parseFloat) * MiB),
    priority: clamp(ui.priority, 1, 10, 5),
    parallel: clamp(ui.parallel, 1, 8, 1),
    checksum: ui.checksum.checked,
  }
}

let keyCheck = 0
let checkedKey = null
async function keyChanged() {
  const key = apiKey()
  if (key) localStorage.setItem(KEY_STORAGE, key)
  else localStorage.removeItem(KEY_STORAGE)
  // The same key again (the input's change event after typing, or leaving the field): nothing
  // to check, and no status text swapped under the pointer (on a narrow window that moved the
  // buttons below between a press and its release, so the click was lost).
  if (key && key === checkedKey && ui.keyStatus.dataset.state === 'ok') return
  checkedKey = key
  const check = ++keyCheck
  if (!key) {
    setKeyStatus('missing', 'Enter an API key to upload.')
    library.clear()
    live.stop()
    ui.liveStatus.dataset.state = 'closed'
    ui.liveStatus.textContent = 'Live updates: waiting for an API key'
    return
  }
  setKeyStatus('checking', 'Checking the key…')
  // GET /v1/me names the key's user: 200 for a valid key, 401 for an unknown or revoked one.
  let state
  let text
  let role = null
  try {
    const res = await fetch('/v1/me', { headers: authHeaders() })
    if (res.ok) {
      const me = (await res.json()).data
      state = 'ok'
      role = me.key?.role ?? 'viewer'
      text = `Key accepted: uploads go to ${me.username}.`
    } else if (res.status === 401) {
      state = 'refused'
      text = 'The server refused this key (unknown or revoked).'
    } else {
      state = 'unreachable'
      text = `The server could not check the key (HTTP ${res.status}).`
    }
  } catch {
    state = 'unreachable'
    text = 'The server cannot be reached.'
  }
  if (check !== keyCheck) return
  setKeyStatus(state, text)
  if (state === 'refused') {
    library.clear()
    live.stop()
    return
  }
  if (state === 'ok') library.setKey(role)
  tracker.lastSequence = null // another key may be another user's stream
  live.start()
  pump()
}

function setKeyStatus(state, text) {
  ui.keyStatus.dataset.state = state
  ui.keyStatus.textContent = text
}

// ---------------------------------------------------------------- uploads

function addFiles(files) {
  for (const file of files) {
    const entry = tracker.add(file)
    uploads.set(entry.id, { file, upload: null, meter: new SpeedMeter(), completion: {} })
  }
  pump()
}

/** Start queued uploads while fewer than MAX_ACTIVE_UPLOADS are running. */
async function pump() {
  if (ui.keyStatus.dataset.state === 'refused' || !apiKey()) return
  checksumDiscovery ??= discoverChecksumAlgorithm(TUS_ENDPOINT)
  checksumAlgorithm = await checksumDiscovery
  const entries = [...tracker.entries.values()]
  let active = entries.filter((e) => e.state === 'uploading').length
  for (const entry of entries) {
    if (active >= MAX_ACTIVE_UPLOADS) break
    if (entry.state === 'queued' && !uploads.get(entry.id).upload) {
      startUpload(entry)
      active += 1
    }
  }
}

function urlsInUse() {
  return new Set([...uploads.values()].map((u) => u.upload?.url).filter(Boolean))
}

function sessionIdOf(url) {
  const last = new URL(url, window.location.href).pathname.split('/').filter(Boolean).pop()
  return last ? decodeURIComponent(last) : null
}

function completionOf(res) {
  const videoId = res?.getHeader('Vidgate-Video-Id')
  if (!videoId) return null
  return {
    sessionId: res.getHeader('Vidgate-Session-Id') || null,
    videoId,
    duplicate: (res.getHeader('Vidgate-Duplicate') || '').toLowerCase() === 'true',
  }
}

function shouldRetry(err) {
  const res = err?.originalResponse
  if (!res) return navigator.onLine !== false // a network error
  const status = res.getStatus()
  if (status === 409) return parseErrorBody(res.getBody())?.code !== 'session_not_active'
  return status === 423 || status === 429 || status === 503 || status === 507 || (status >= 500 && status !== 501)
}

async function startUpload(entry) {
  const state = uploads.get(entry.id)
  const { file, meter } = state
  const opts = uploadOptions()
  const metadata = { filename: file.name, priority: String(opts.priority) }
  if (file.type) metadata.filetype = file.type
  const options = {
    endpoint: TUS_ENDPOINT,
    chunkSize: opts.chunkSize,
    retryDelays: RETRY_DELAYS,
    parallelUploads: opts.parallel,
    headers: authHeaders(),
    metadata,
    removeFingerprintOnSuccess: true,
    onShouldRetry: shouldRetry,
    onUploadUrlAvailable: () => tracker.uploadStarted(entry.id, sessionIdOf(upload.url)),
    onProgress: (sent) => {
      tracker.progress(entry.id, sent, meter.add(sent, performance.now()))
    },
    onAfterResponse: (_req, res) => {
      const done = completionOf(res)
      if (done) state.completion = done
    },
    onSuccess: ({ lastResponse }) => {
      const done = completionOf(lastResponse) ?? state.completion
      const sessionId = done.sessionId ?? (upload.url ? sessionIdOf(upload.url) : null)
      tracker.uploadFinished(entry.id, { ...done, sessionId })
      followUp(entry.id)
      pump()
    },
    onError: (err) => {
      const error = describeUploadError(err)
      tracker.failed(entry.id, error)
      pump()
    },
  }
  if (opts.checksum && checksumAlgorithm) options.httpStack = new ChecksumHttpStack(new DefaultHttpStack(), checksumAlgorithm)
  const upload = new Upload(file, options)
  state.upload = upload
  tracker.uploadStarted(entry.id, null)
  try {
    const inUse = urlsInUse()
    const previous = (await upload.findPreviousUploads()).filter(
      (p) => (p.uploadUrl || p.parallelUploadUrls) && !inUse.has(p.uploadUrl),
    )
    if (previous.length > 0) {
      // Started before (this page was closed or reloaded mid-way): carry on from the server's offset.
      upload.resumeFromPreviousUpload(previous[0])
      if (previous[0].uploadUrl) tracker.uploadStarted(entry.id, sessionIdOf(previous[0].uploadUrl))
    }
  } catch {
    // no URL storage: start afresh
  }
  meter.reset()
  upload.start()
}

function pauseOrResume(id) {
  const entry = tracker.get(id)
  const { upload, meter } = uploads.get(id)
  if (!upload) return
  if (entry.state === 'uploading') {
    upload.abort()
    tracker.paused(id, true)
  } else if (entry.state === 'paused') {
    meter.reset()
    tracker.paused(id, false)
    upload.start()
  }
}

function cancel(id) {
  const { upload } = uploads.get(id)
  tracker.cancelled(id)
  upload?.abort(true).catch(() => {}) // terminates the upload on the server (DELETE)
  pump()
}

// ---------------------------------------------------------------- processing

/** Ask the server where an uploaded file stands (covers events missed while disconnected). */
async function followUp(id) {
  const entry = tracker.get(id)
  if (!entry || (FINAL_STATES.has(entry.state) && entry.state !== 'error')) return
  try {
    if (!entry.videoId && entry.sessionId) {
      tracker.sessionView(id, await getJson(`/v1/upload/video/session/${encodeURIComponent(entry.sessionId)}`))
    }
    if (entry.videoId && !FINAL_STATES.has(entry.state)) {
      const view = await getJson(`/v1/videos/${encodeURIComponent(entry.videoId)}`)
      if (tracker.videoStatus(entry.videoId, view)) await fetchResult(entry.videoId)
    }
  } catch {
    // the poller tries again
  }
}

const fetching = new Set()
async function fetchResult(videoId) {
  if (fetching.has(videoId)) return
  fetching.add(videoId)
  try {
    tracker.result(videoId, await getJson(`/v1/videos/${encodeURIComponent(videoId)}/result`))
  } catch {
    // 409 result_not_ready: the processing events will tell
  } finally {
    fetching.delete(videoId)
  }
}

// Events can be missed (no connection yet, a restart): poll now and then, faster without /ws.
let lastPoll = 0
setInterval(() => {
  const interval = ui.liveStatus.dataset.state === 'open' ? 5000 : 2000
  if (performance.now() - lastPoll < interval) return
  lastPoll = performance.now()
  for (const entry of tracker.entries.values()) if (entry.state === 'processing') followUp(entry.id)
}, 500)

// ---------------------------------------------------------------- view

function field(li, name) {
  return li.querySelector(`[data-field="${name}"]`)
}

const STATE_LABELS = {
  queued: 'Queued',
  uploading: 'Uploading',
  paused: 'Paused',
  processing: 'Processing',
  done: 'Done',
  cancelled: 'Cancelled',
}

/** The badge's word: an error says the word of its outcome (Refused or Failed), as everywhere. */
function stateLabel(entry) {
  if (entry.state === 'error') return OUTCOME_LABELS[entry.outcome ?? 'failed']
  return STATE_LABELS[entry.state] ?? entry.state
}

function itemFor(entry) {
  let li = items.get(entry.id)
  if (li) return li
  li = ui.template.content.firstElementChild.cloneNode(true)
  li.dataset.uploadId = entry.id
  li.dataset.filename = entry.name
  field(li, 'name').textContent = entry.name
  field(li, 'size').textContent = formatBytes(entry.size)
  const bar = li.querySelector('.upload-progress')
  bar.setAttribute('aria-label', `Upload of ${entry.name}`)
  li.querySelector('.processing-progress').setAttribute('aria-label', `Processing of ${entry.name}`)
  li.querySelector('.pause').addEventListener('click', () => pauseOrResume(entry.id))
  li.querySelector('.cancel').addEventListener('click', () => cancel(entry.id))
  items.set(entry.id, li)
  ui.list.append(li)
  ui.empty.hidden = true
  return li
}

function render(entry) {
  const li = itemFor(entry)
  li.dataset.state = entry.state
  if (entry.outcome) li.dataset.outcome = entry.outcome
  else delete li.dataset.outcome
  li.dataset.bytesSent = String(entry.bytesSent)
  li.dataset.duplicate = String(entry.duplicate)
  if (entry.sessionId) li.dataset.sessionId = entry.sessionId
  if (entry.videoId) li.dataset.videoId = entry.videoId
  const label = stateLabel(entry)
  field(li, 'state').textContent = label

  const fraction = entry.size > 0 ? entry.bytesSent / entry.size : entry.state === 'queued' ? 0 : 1
  const bar = li.querySelector('.upload-progress')
  // A refused file is refused whole: its bar fills in the refusal colour instead of standing at
  // the bytes sent in the colour of an upload under way. A failed one keeps how far it got.
  bar.value = entry.outcome === 'refused' ? 1 : Math.min(1, fraction)
  bar.setAttribute(
    'aria-valuetext',
    entry.state === 'error' ? (entry.outcome === 'refused' ? label : `${label} at ${formatPercent(fraction)}`) : formatPercent(fraction),
  )
  li.querySelector('.numbers').hidden = !(entry.state === 'uploading' || entry.state === 'paused')
  field(li, 'percent').textContent = formatPercent(fraction)
  field(li, 'speed').textContent = entry.state === 'uploading' ? formatSpeed(entry.speed) : '—'
  const remaining = entry.speed ? (entry.size - entry.bytesSent) / entry.speed : null
  field(li, 'eta').textContent = entry.state === 'uploading' && remaining != null ? `${formatDuration(remaining)} left` : ''
  const note = field(li, 'note')
  note.textContent = entry.note ?? ''
  note.hidden = entry.state === 'error' || (entry.state === 'done' && entry.duplicate) // said below

  const processing = li.querySelector('.processing-progress')
  processing.hidden = entry.state !== 'processing'
  if (entry.processingProgress != null) processing.value = entry.processingProgress
  else processing.removeAttribute('value') // indeterminate

  li.querySelector('.duplicate-notice').hidden = !entry.duplicate

  const error = li.querySelector('.error')
  error.hidden = !entry.error
  if (entry.error) {
    li.dataset.errorCode = entry.error.code ?? ''
    field(li, 'error-code').textContent = entry.error.code ?? 'error'
    field(li, 'error-message').textContent = entry.error.message ?? ''
    field(li, 'error-outcome').textContent = label
    field(li, 'error-status').textContent = entry.error.status ? ` (HTTP ${entry.error.status})` : ''
  }

  const result = li.querySelector('.result')
  if (entry.result && result.hidden) {
    const summary = result.querySelector('.result-summary')
    summary.replaceChildren()
    for (const [name, label, text] of summarizeResult(entry.result)) {
      const dt = document.createElement('dt')
      dt.textContent = label
      const dd = document.createElement('dd')
      dd.dataset.field = name
      dd.textContent = text
      summary.append(dt, dd)
    }
    result.querySelector('.result-json').textContent = JSON.stringify(entry.result, null, 2)
    result.hidden = false
  }

  const pause = li.querySelector('.pause')
  pause.textContent = entry.state === 'paused' ? 'Resume' : 'Pause'
  pause.hidden = !(entry.state === 'uploading' || entry.state === 'paused')
  li.querySelector('.cancel').hidden = !(entry.state === 'queued' || entry.state === 'uploading' || entry.state === 'paused')
}

// ---------------------------------------------------------------- wiring

function showView(view) {
  const isLibrary = view === 'library'
  $('#upload-view').hidden = isLibrary
  $('#library').hidden = !isLibrary
  document.body.classList.toggle('library-wide', isLibrary)
  $('#show-upload').setAttribute('aria-pressed', String(!isLibrary))
  $('#show-library').setAttribute('aria-pressed', String(isLibrary))
  document.body.dataset.view = view
  if (isLibrary) library.loadMore()
}

function wire() {
  loadSettings()
  let typing
  ui.keyInput.addEventListener('input', () => {
    clearTimeout(typing)
    typing = setTimeout(keyChanged, 400)
  })
  ui.keyInput.addEventListener('change', () => {
    clearTimeout(typing)
    keyChanged()
  })
  ui.keyToggle.addEventListener('click', () => {
    const shown = ui.keyInput.type === 'text'
    ui.keyInput.type = shown ? 'password' : 'text'
    ui.keyToggle.textContent = shown ? 'Show' : 'Hide'
    ui.keyToggle.setAttribute('aria-pressed', String(!shown))
  })
  for (const input of [ui.chunkSize, ui.priority, ui.parallel, ui.checksum]) input.addEventListener('change', saveOptions)
  $('#settings-form').addEventListener('submit', (event) => {
    event.preventDefault()
    keyChanged()
  })

  ui.fileInput.addEventListener('change', () => {
    addFiles([...ui.fileInput.files])
    ui.fileInput.value = ''
  })
  const zone = ui.dropzone
  for (const type of ['dragenter', 'dragover']) {
    zone.addEventListener(type, (event) => {
      event.preventDefault()
      event.dataTransfer.dropEffect = 'copy'
      zone.dataset.state = 'over'
    })
  }
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.dataset.state = 'idle'
  })
  zone.addEventListener('drop', (event) => {
    event.preventDefault()
    zone.dataset.state = 'idle'
    addFiles([...(event.dataTransfer?.files ?? [])])
  })
  // A file dropped beside the zone must not make the browser navigate away to it.
  for (const type of ['dragover', 'drop']) window.addEventListener(type, (event) => event.preventDefault())
  window.addEventListener('beforeunload', (event) => {
    if ([...tracker.entries.values()].some((e) => e.state === 'uploading')) event.preventDefault()
  })

  for (const [button, view] of [
    ['#show-upload', 'upload'],
    ['#show-library', 'library'],
  ]) {
    $(button).addEventListener('click', () => showView(view))
  }

  keyChanged()
  document.body.dataset.ready = 'true'
}

wire()
