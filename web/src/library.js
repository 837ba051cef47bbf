// The Library view (the review desk): the key's videos as a grid of posters, filters, infinite
// scroll on the listing's cursor, live updates from /ws, and a detail panel with the player
// (signed URL: a <video> sends no key header), the storyboard strip that seeks it, scene cuts
// on a timeline, moderation signals, similar videos, review decisions and delete.

import { formatBytes, formatDuration } from './format.js'

const REVIEW_KEYS = { a: 'approved', r: 'rejected', e: 'escalated' }
const REFRESHING_EVENTS = new Set([
  'upload_completed',
  'duplicate_detected',
  'processing_initiated',
  'processing_completed',
  'processing_failed',
  'video_reviewed',
  'video_deleted',
  'hash_match',
])

// ---------------------------------------------------------------- pure helpers (tested under Node)

/** The GET /v1/videos query of the filters, the cursor and the page size. */
export function listQuery(filters, cursor, limit) {
  const params = new URLSearchParams()
  if (limit) params.set('limit', String(limit))
  for (const name of ['status', 'review', 'filename']) {
    const value = (filters?.[name] ?? '').trim()
    if (value) params.set(name, value)
  }
  if (cursor) params.set('cursor', cursor)
  const text = params.toString()
  return text ? `/v1/videos?${text}` : '/v1/videos'
}

/** A page appended to what is shown: never the same video twice (a live refresh may overlap). */
export function mergeItems(shown, page) {
  const seen = new Set(shown.map((item) => item.video_id))
  return [...shown, ...page.filter((item) => !seen.has(item.video_id))]
}

/** Where one storyboard tile sits in the sprite, as CSS background values, scaled to `width`. */
export function tileStyle(index, tile, width) {
  const scale = width / index.tile_width
  return {
    width: `${Math.round(index.tile_width * scale)}px`,
    height: `${Math.round(index.tile_height * scale)}px`,
    backgroundSize: `${Math.round(index.columns * index.tile_width * scale)}px ${Math.round(index.rows * index.tile_height * scale)}px`,
    backgroundPosition: `-${Math.round(tile.x * scale)}px -${Math.round(tile.y * scale)}px`,
  }
}

/** Percent positions of scene cuts on a timeline of `duration` seconds. */
export function cutPositions(cuts, duration) {
  if (!Array.isArray(cuts) || !duration) return []
  return cuts.filter((t) => t >= 0 && t <= duration).map((t) => Math.round((t / duration) * 1000) / 10)
}

/** The next selected index for an arrow key in a grid of `columns` (clamped to the items). */
export function moveSelection(index, key, count, columns) {
  if (count === 0) return -1
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns }[key] ?? 0
  if (index < 0) return 0
  return Math.max(0, Math.min(count - 1, index + step))
}

// ---------------------------------------------------------------- the view

const $ = (selector, root = document) => root.querySelector(selector)

export class Library {
  /**
   * @param {object} options
   * @param {(path: string, init?: object) => Promise<any>} options.request  JSON API call with the key
   */
  constructor({ request }) {
    this.request = request
    this.items = []
    this.cursor = null
    this.done = false
    this.loading = null
    this.generation = 0
    this.selected = -1
    this.detailId = null
    this.role = null
    this.refreshTimer = null
    this.ui = {
      section: $('#library'),
      filters: $('#library-filters'),
      status: $('#filter-status'),
      review: $('#filter-review'),
      filename: $('#filter-filename'),
      note: $('#library-note'),
      grid: $('#library-grid'),
      more: $('#load-more'),
      sentinel: $('#library-sentinel'),
      detail: $('#library-detail'),
      card: $('#card-template'),
    }
    this.#wire()
  }

  get visible() {
    return !this.ui.section.hidden
  }

  /** A key was accepted (its role decides which buttons show); start over. */
  setKey(role) {
    this.role = role
    this.ui.section.dataset.role = role ?? 'unknown'
    this.reload()
  }

  clear() {
    this.role = null
    this.generation += 1
    this.items = []
    this.ui.grid.replaceChildren()
    this.closeDetail()
  }

  filters() {
    return { status: this.ui.status.value, review: this.ui.review.value, filename: this.ui.filename.value }
  }

  reload() {
    this.generation += 1
    this.items = []
    this.cursor = null
    this.done = false
    this.loading = null
    this.selected = -1
    this.ui.grid.replaceChildren()
    this.ui.note.textContent = 'Loading…'
    this.ui.note.dataset.state = 'loading'
    return this.loadMore()
  }

  async loadMore() {
    if (this.done || this.role == null) return
    if (this.loading) return this.loading
    const generation = this.generation
    this.loading = (async () => {
      try {
        const page = await this.request(listQuery(this.filters(), this.cursor))
        if (generation !== this.generation) return
        this.cursor = page.next_cursor
        this.done = page.next_cursor == null
        const fresh = mergeItems(this.items, page.items).slice(this.items.length)
        this.items.push(...fresh)
        for (const item of fresh) this.ui.grid.append(this.#card(item))
        this.#note()
      } catch (err) {
        if (generation === this.generation) this.#note(`Could not list the videos: ${err.message}`)
      } finally {
        if (generation === this.generation) this.loading = null
      }
    })()
    await this.loading
    // the sentinel still in view (a tall window, a short page): keep filling
    if (generation === this.generation && !this.done && this.#sentinelVisible()) return this.loadMore()
  }

  /** A live event of this key's user: refresh what it changes (debounced: events come in bursts). */
  onEvent(event) {
    if (!REFRESHING_EVENTS.has(event.event_type) || this.role == null) return
    if (event.event_type === 'video_deleted') this.#removeCard(event.video_id)
    clearTimeout(this.refreshTimer)
    this.refreshTimer = setTimeout(() => this.#refresh(event), 300)
  }

  async #refresh(event) {
    // The first page again, merged in front: a new upload appears at the top, a changed video
    // is redrawn in place. Deeper pages stay as they are.
    const generation = this.generation
    let page
    try {
      page = await this.request(listQuery(this.filters(), null))
    } catch {
      return
    }
    if (generation !== this.generation) return
    const known = new Map(this.items.map((item, i) => [item.video_id, i]))
    const added = []
    for (const item of page.items) {
      if (known.has(item.video_id)) {
        const i = known.get(item.video_id)
        this.items[i] = item
        const old = this.ui.grid.querySelector(`[data-video-id="${CSS.escape(item.video_id)}"]`)
        if (old) old.replaceWith(this.#card(item))
      } else if (this.items.length === 0 || item.created_at >= this.items[0].created_at) {
        added.push(item)
      }
    }
    this.items.unshift(...added)
    this.ui.grid.prepend(...added.map((item) => this.#card(item)))
    if (this.done && page.next_cursor == null && this.items.length <= page.items.length) this.cursor = null
    this.#highlight()
    this.#note()
    if (this.detailId && event.video_id === this.detailId && event.event_type !== 'video_deleted') this.open(this.detailId)
  }

  #note(text) {
    const count = this.items.length
    this.ui.note.textContent =
      text ?? (count === 0 ? 'No videos here yet.' : `${count} video${count === 1 ? '' : 's'}${this.done ? '' : ', more below'}`)
    this.ui.note.dataset.state = text ? 'error' : 'ok'
    this.ui.more.hidden = this.done
  }

  #card(item) {
    const li = this.ui.card.content.firstElementChild.cloneNode(true)
    li.dataset.videoId = item.video_id
    li.dataset.status = item.status
    li.dataset.review = item.review_state
    const img = li.querySelector('img')
    img.alt = item.filename ?? item.video_id
    // Pictures exist once processing is done (asking before would log a 409 in the console).
    if (item.status === 'completed' && item.urls) img.src = item.urls.poster
    else img.hidden = true
    li.querySelector('[data-field="name"]').textContent = item.filename ?? '(no name)'
    li.querySelector('[data-field="status"]').textContent = item.status
    li.querySelector('[data-field="duration"]').textContent = formatDuration(item.duration)
    li.querySelector('[data-field="review"]').textContent = item.review_state
    li.querySelector('button').addEventListener('click', () => this.open(item.video_id))
    return li
  }

  #removeCard(videoId) {
    const index = this.items.findIndex((item) => item.video_id === videoId)
    if (index >= 0) this.items.splice(index, 1)
    this.ui.grid.querySelector(`[data-video-id="${CSS.escape(videoId)}"]`)?.remove()
    if (this.detailId === videoId) this.closeDetail()
    this.#note()
  }

  #highlight() {
    const cards = [...this.ui.grid.children]
    cards.forEach((card, i) => card.classList.toggle('selected', i === this.selected))
  }

  // ------------------------------------------------------------ detail

  async open(videoId) {
    this.detailId = videoId
    this.selected = this.items.findIndex((item) => item.video_id === videoId)
    this.#highlight()
    const panel = this.ui.detail
    panel.hidden = false
    panel.dataset.videoId = videoId
    panel.dataset.state = 'loading'
    const item = this.items.find((i) => i.video_id === videoId)
    let urls, result, reviews
    try {
      ;[urls, reviews] = await Promise.all([
        this.request(`/v1/videos/${videoId}/urls`),
        this.request(`/v1/videos/${videoId}/reviews`),
      ])
      result = item?.status === 'completed' ? await this.request(`/v1/videos/${videoId}/result`) : null
    } catch (err) {
      if (this.detailId !== videoId) return
      panel.dataset.state = 'error'
      $('[data-field="detail-error"]', panel).textContent = err.message
      return
    }
    if (this.detailId !== videoId) return
    this.#fillDetail(videoId, item, urls, result, reviews)
    panel.dataset.state = 'ready'
    panel.scrollIntoView({ block: 'nearest' })
  }

  closeDetail() {
    this.detailId = null
    const panel = this.ui.detail
    panel.hidden = true
    panel.dataset.state = 'closed'
    const player = $('video', panel)
    player.pause()
    if (player.dataset.src) {
      delete player.dataset.src
      player.removeAttribute('src')
      player.load()
    }
  }

  #fillDetail(videoId, item, urls, result, reviews) {
    const panel = this.ui.detail
    const player = $('video', panel)
    const source = urls.content
    if (player.dataset.src !== source) {
      player.dataset.src = source
      player.src = source
    }
    $('[data-field="title"]', panel).textContent = item?.filename ?? videoId
    const meta = result?.metadata ?? {}
    const video = meta.video ?? {}
    const rows = [
      ['status', 'Status', item?.status ?? '—'],
      ['duration', 'Duration', formatDuration(meta.duration ?? item?.duration)],
      ['resolution', 'Resolution', video.width ? `${video.width}×${video.height}` : item?.width ? `${item.width}×${item.height}` : '—'],
      ['video_codec', 'Video codec', video.codec ?? '—'],
      ['container', 'Container', meta.container ?? item?.container ?? '—'],
      ['size', 'Size', formatBytes(item?.file_size)],
      ['uploaded', 'Uploaded', item ? new Date(item.created_at).toLocaleString() : '—'],
      ['content_hash', 'SHA-256', item?.content_hash ?? '—'],
      ['scene_cuts', 'Scene cuts', result?.statistics?.scene_cuts?.length ?? '—'],
    ]
    this.#definitionList($('[data-field="metadata"]', panel), rows)
    this.#moderation($('[data-field="moderation"]', panel), result?.moderation)
    this.#timeline($('.timeline', panel), result?.statistics?.scene_cuts ?? [], meta.duration ?? item?.duration)
    this.#similar($('[data-field="similar"]', panel), result?.similar_videos ?? [])
    this.#reviews(panel, reviews)
    const strip = $('.storyboard', panel)
    strip.replaceChildren()
    if (result) this.#storyboard(strip, urls.storyboard_index, player)
    const confirm = $('.confirm-delete', panel)
    confirm.hidden = true
    $('[data-field="action-error"]', panel).textContent = ''
  }

  #definitionList(dl, rows) {
    dl.replaceChildren()
    for (const [field, label, text] of rows) {
      const dt = document.createElement('dt')
      dt.textContent = label
      const dd = document.createElement('dd')
      dd.dataset.field = field
      dd.textContent = String(text)
      dl.append(dt, dd)
    }
  }

  #moderation(box, moderation) {
    box.replaceChildren()
    box.dataset.flagged = String(Boolean(moderation?.flagged))
    const head = document.createElement('p')
    if (!moderation) {
      head.textContent = 'No moderation signals yet.'
      box.append(head)
      return
    }
    head.textContent = moderation.flagged ? 'Flagged for review' : 'Not flagged'
    head.className = moderation.flagged ? 'flag bad' : 'flag ok'
    box.append(head)
    const nsfw = moderation.nsfw ?? {}
    const score = document.createElement('p')
    score.dataset.field = 'nsfw'
    score.textContent =
      nsfw.status === 'ok'
        ? `Explicit-content score: max ${Number(nsfw.max ?? 0).toFixed(3)}, mean ${Number(nsfw.mean ?? 0).toFixed(3)} (threshold ${nsfw.threshold})`
        : `Explicit-content classifier: ${nsfw.status}${nsfw.reason ? ` (${nsfw.reason})` : ''}`
    box.append(score)
    const list = document.createElement('ul')
    for (const reason of moderation.reasons ?? []) {
      const li = document.createElement('li')
      li.textContent = reason.message
      list.append(li)
    }
    for (const match of moderation.hash_matches ?? []) {
      const li = document.createElement('li')
      li.dataset.field = 'hash-match'
      li.textContent = `Hash bank ${match.bank}: ${match.entry_name ?? `entry ${match.entry_id}`}`
      list.append(li)
    }
    if (list.children.length) box.append(list)
  }

  #timeline(bar, cuts, duration) {
    bar.replaceChildren()
    for (const left of cutPositions(cuts, duration)) {
      const mark = document.createElement('span')
      mark.className = 'cut'
      mark.style.left = `${left}%`
      bar.append(mark)
    }
  }

  #similar(box, similar) {
    box.replaceChildren()
    const mine = similar.filter((s) => s.video_id)
    if (mine.length === 0) {
      box.textContent = 'none'
      return
    }
    for (const match of mine) {
      const button = document.createElement('button')
      button.type = 'button'
      button.className = 'similar'
      button.dataset.videoId = match.video_id
      const known = this.items.find((item) => item.video_id === match.video_id)
      if (known?.urls && known.status === 'completed') {
        const img = document.createElement('img')
        img.src = known.urls.poster
        img.alt = ''
        button.append(img)
      }
      const label = document.createElement('span')
      label.textContent = `${known?.filename ?? match.video_id} · ${Math.round(match.similarity * 100)} %`
      button.append(label)
      button.addEventListener('click', () => this.open(match.video_id))
      box.append(button)
    }
  }

  async #storyboard(strip, indexUrl, player) {
    let index
    try {
      const res = await fetch(indexUrl) // signed: no key needed, as for the <img> sprite
      if (!res.ok) return
      index = await res.json()
    } catch {
      return
    }
    for (const tile of index.tiles) {
      const button = document.createElement('button')
      button.type = 'button'
      button.className = 'tile'
      button.title = formatDuration(tile.start)
      button.dataset.start = String(tile.start)
      Object.assign(button.style, tileStyle(index, tile, 96), { backgroundImage: `url("${index.url}")` })
      button.addEventListener('click', () => {
        player.currentTime = tile.start
      })
      strip.append(button)
    }
  }

  #reviews(panel, history) {
    $('[data-field="review-state"]', panel).textContent = history.state
    const list = $('.review-history', panel)
    list.replaceChildren()
    for (const review of history.reviews) {
      const li = document.createElement('li')
      li.dataset.decision = review.decision
      const who = review.key_label ?? review.key_id ?? review.key_role
      li.textContent = `${review.decision} · ${new Date(review.created_at).toLocaleString()} · ${who}${review.note ? ` · ${review.note}` : ''}`
      list.append(li)
    }
    const mayReview = this.role === 'reviewer' || this.role === 'admin'
    $('.review-actions', panel).hidden = !mayReview
    $('.delete', panel).hidden = !(this.role === 'uploader' || this.role === 'admin')
  }

  async decide(decision) {
    const videoId = this.detailId
    if (!videoId || !(this.role === 'reviewer' || this.role === 'admin')) return
    const panel = this.ui.detail
    const note = $('#review-note', panel).value.trim()
    try {
      await this.request(`/v1/videos/${videoId}/review`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(note ? { decision, note } : { decision }),
      })
    } catch (err) {
      $('[data-field="action-error"]', panel).textContent = `${err.code ?? 'error'}: ${err.message}`
      return
    }
    $('#review-note', panel).value = ''
    const history = await this.request(`/v1/videos/${videoId}/reviews`)
    if (this.detailId !== videoId) return
    this.#reviews(panel, history)
    const item = this.items.find((i) => i.video_id === videoId)
    if (item) {
      item.review_state = history.state
      const card = this.ui.grid.querySelector(`[data-video-id="${CSS.escape(videoId)}"]`)
      if (card) {
        card.dataset.review = history.state
        card.querySelector('[data-field="review"]').textContent = history.state
      }
    }
  }

  async deleteOpen() {
    const videoId = this.detailId
    if (!videoId) return
    const panel = this.ui.detail
    try {
      await this.request(`/v1/videos/${videoId}`, { method: 'DELETE' })
    } catch (err) {
      $('[data-field="action-error"]', panel).textContent = `${err.code ?? 'error'}: ${err.message}`
      return
    }
    this.#removeCard(videoId)
  }

  // ------------------------------------------------------------ wiring

  #sentinelVisible() {
    const box = this.ui.sentinel.getBoundingClientRect()
    return this.visible && box.top < window.innerHeight + 200
  }

  #columns() {
    const cards = [...this.ui.grid.children]
    if (cards.length < 2) return 1
    const top = cards[0].offsetTop
    const inRow = cards.findIndex((card) => card.offsetTop !== top)
    return inRow < 0 ? cards.length : inRow
  }

  #wire() {
    const ui = this.ui
    let typing
    ui.filters.addEventListener('submit', (event) => {
      event.preventDefault()
      this.reload()
    })
    for (const select of [ui.status, ui.review]) select.addEventListener('change', () => this.reload())
    ui.filename.addEventListener('input', () => {
      clearTimeout(typing)
      typing = setTimeout(() => this.reload(), 300)
    })
    ui.more.addEventListener('click', () => this.loadMore())
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting) && this.visible) this.loadMore()
    }, { rootMargin: '200px' }).observe(ui.sentinel)
    const panel = ui.detail
    $('.close', panel).addEventListener('click', () => this.closeDetail())
    for (const button of panel.querySelectorAll('.review-actions [data-decision]')) {
      button.addEventListener('click', () => this.decide(button.dataset.decision))
    }
    $('.delete', panel).addEventListener('click', () => {
      $('.confirm-delete', panel).hidden = false
      $('.confirm-delete .really', panel).focus()
    })
    $('.confirm-delete .really', panel).addEventListener('click', () => this.deleteOpen())
    $('.confirm-delete .keep', panel).addEventListener('click', () => {
      $('.confirm-delete', panel).hidden = true
    })
    document.addEventListener('keydown', (event) => {
      if (!this.visible || event.altKey || event.ctrlKey || event.metaKey) return
      const target = event.target
      if (target instanceof HTMLElement && target.closest('input, textarea, select, video')) return
      if (event.key.startsWith('Arrow') && this.items.length) {
        event.preventDefault()
        this.selected = moveSelection(this.selected, event.key, this.items.length, this.#columns())
        this.#highlight()
        const item = this.items[this.selected]
        this.ui.grid.children[this.selected]?.scrollIntoView({ block: 'nearest' })
        if (item) this.open(item.video_id)
      } else if (REVIEW_KEYS[event.key] && this.detailId) {
        event.preventDefault()
        this.decide(REVIEW_KEYS[event.key])
      } else if (event.key === 'Escape' && this.detailId) {
        this.closeDetail()
      }
    })
  }
}
