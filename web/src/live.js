// The /ws connection: subscribe to everything of this key's user, reconnect with backoff, and
// after a reconnect ask for what was missed: everything after the last number of the user's
// stream seen (`since`, sequences count all of a user's events), and on the subjects still open.

export function eventsUrl(location, apiKey, since = null) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const resume = Number.isInteger(since) && since >= 0 ? `&since=${since}` : ''
  return `${scheme}//${location.host}/ws?api_key=${encodeURIComponent(apiKey)}&subscribe=all${resume}`
}

export class LiveEvents {
  /**
   * @param {object} options
   * @param {() => string} options.url            where to connect (called on every attempt)
   * @param {(event: object) => void} options.onEvent
   * @param {(state: string, detail?: string) => void} options.onState  connecting | open | closed
   * @param {() => object[]} options.openSubjects  [{session_id|video_id, since}] to catch up on
   * @param {typeof WebSocket} [options.WebSocketImpl]
   */
  constructor({ url, onEvent, onState = () => {}, openSubjects = () => [], WebSocketImpl = globalThis.WebSocket }) {
    this.url = url
    this.onEvent = onEvent
    this.onState = onState
    this.openSubjects = openSubjects
    this.WebSocketImpl = WebSocketImpl
    this.socket = null
    this.attempt = 0
    this.timer = null
    this.stopped = true
    this.everConnected = false
  }

  start() {
    this.stop()
    this.stopped = false
    this.attempt = 0
    this.#connect()
  }

  stop() {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = null
    if (this.socket) {
      const socket = this.socket
      this.socket = null
      socket.onclose = socket.onmessage = socket.onopen = socket.onerror = null
      socket.close(1000, 'page closed the connection')
    }
  }

  #connect() {
    this.onState('connecting')
    let socket
    try {
      socket = new this.WebSocketImpl(this.url())
    } catch (err) {
      this.onState('closed', String(err))
      this.#retry()
      return
    }
    this.socket = socket
    socket.onopen = () => {
      const reconnect = this.everConnected
      this.everConnected = true
      this.attempt = 0
      this.onState('open')
      if (reconnect) {
        for (const subject of this.openSubjects()) socket.send(JSON.stringify({ action: 'subscribe', ...subject }))
      }
    }
    socket.onmessage = (message) => {
      let event
      try {
        event = JSON.parse(message.data)
      } catch {
        return
      }
      this.onEvent(event)
    }
    socket.onclose = (close) => {
      if (this.socket !== socket) return
      this.socket = null
      const detail = close.code === 4008 ? 'fell behind; catching up' : close.reason || `code ${close.code}`
      this.onState('closed', detail)
      this.#retry(close.code === 4008 ? 0 : undefined)
    }
  }

  #retry(delay) {
    if (this.stopped) return
    const wait = delay ?? Math.min(15000, 500 * 2 ** this.attempt)
    this.attempt += 1
    this.timer = setTimeout(() => this.#connect(), wait)
  }
}
