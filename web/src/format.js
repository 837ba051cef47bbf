// Small pure helpers for showing sizes, speeds and durations (no DOM, tested under Node).

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

export function formatBytes(bytes) {
  if (bytes == null || !Number.isFinite(bytes)) return '—'
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`
}

export function formatSpeed(bytesPerSecond) {
  if (bytesPerSecond == null || !Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '—'
  return `${formatBytes(bytesPerSecond)}/s`
}

export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—'
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`
  const whole = Math.round(seconds)
  const h = Math.floor(whole / 3600)
  const m = Math.floor((whole % 3600) / 60)
  const s = String(whole % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`
}

export function formatPercent(fraction) {
  if (fraction == null || !Number.isFinite(fraction)) return '—'
  return `${(Math.max(0, Math.min(1, fraction)) * 100).toFixed(1)} %`
}

export function formatBitrate(bitsPerSecond) {
  if (bitsPerSecond == null || !Number.isFinite(bitsPerSecond)) return '—'
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`
  return `${Math.round(bitsPerSecond / 1e3)} kbit/s`
}

/** Bytes per second over the last `windowMs` of progress samples. */
export class SpeedMeter {
  constructor(windowMs = 3000) {
    this.windowMs = windowMs
    this.samples = []
  }

  add(bytes, now) {
    this.samples.push([now, bytes])
    while (this.samples.length > 2 && now - this.samples[1][0] >= this.windowMs) this.samples.shift()
    return this.speed()
  }

  speed() {
    if (this.samples.length < 2) return null
    const [t0, b0] = this.samples[0]
    const [t1, b1] = this.samples[this.samples.length - 1]
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : null
  }

  reset() {
    this.samples = []
  }
}

/** The key facts of a VideoAnalysisResult, in display order: [field, label, text]. */
export function summarizeResult(result) {
  const meta = result?.metadata ?? {}
  const video = meta.video ?? {}
  const audio = Array.isArray(meta.audio) ? meta.audio : []
  const rows = [
    ['duration', 'Duration', formatDuration(meta.duration)],
    ['resolution', 'Resolution', video.width && video.height ? `${video.width}×${video.height}` : '—'],
    ['video_codec', 'Video codec', video.codec ?? '—'],
    ['fps', 'Frame rate', video.fps ? `${Number(video.fps).toFixed(2)} fps` : '—'],
    ['container', 'Container', meta.container ?? '—'],
    ['bitrate', 'Bitrate', formatBitrate(meta.bitrate)],
    ['audio', 'Audio', audio.length ? audio.map((a) => `${a.codec}${a.channels ? ` ${a.channels}ch` : ''}`).join(', ') : 'none'],
    ['size', 'Size', formatBytes(meta.size_bytes)],
    ['keyframes', 'Keyframes', result?.keyframes?.count ?? '—'],
    ['scene_cuts', 'Scene cuts', result?.statistics?.scene_cuts?.length ?? '—'],
    ['fingerprint', 'Fingerprint', result?.fingerprint ?? '—'],
    ['content_hash', 'SHA-256', result?.content_hash ?? '—'],
    ['embeddings', 'Embeddings', result?.embeddings ? embeddingText(result.embeddings) : '—'],
    ['similar_videos', 'Similar videos', similarText(result?.similar_videos)],
    ['processing_seconds', 'Processing time', formatDuration(result?.processing_seconds)],
  ]
  return rows.map(([field, label, text]) => [field, label, String(text)])
}

function embeddingText(embeddings) {
  if (embeddings.status === 'ok') return `${embeddings.model_type}, ${embeddings.dimension} dimensions`
  return `${embeddings.status}${embeddings.reason ? ` (${embeddings.reason})` : ''}`
}

function similarText(similar) {
  if (!Array.isArray(similar) || similar.length === 0) return 'none'
  // video_id is null for a video of the shared library that is not the caller's (never named)
  const name = (s) => (s.video_id ? s.video_id.slice(0, 8) : 'not yours')
  return similar.map((s) => `${name(s)} (${Math.round(s.similarity * 100)} %)`).join(', ')
}
