// The WebSocket clients of bench/ws_latency.py's uploads mode, in Node.js (20+, run with
// --experimental-websocket on 20; WebSocket is built in from 22): N sockets of one user.
//
// Why not Python: 1,000 Python `websockets` clients in one process parse ~9,000 messages/s and
// saturate a core themselves, so the latency measured was the client's own backlog (p50 4.4 s at
// 30 % server CPU). Node's built-in client costs a few microseconds per message, and only the
// event's head is parsed (see head()).
//
//   node --experimental-websocket bench/ws_follower.mjs URL COUNT
// stdout: "connected COUNT" once every socket is open. stdin: one JSON line
// {"after": START, "expected": [sequences]}; the script then waits (up to 30 s) until every
// socket has every expected sequence, prints one JSON line with the receipts and exits.

import { randomBytes } from "node:crypto";
import { connect as tcpConnect } from "node:net";
import { createInterface } from "node:readline";

const [url, countText, kind = "websocket"] = process.argv.slice(2);
const count = Number(countText);
const clients = [];
let open = 0;

/** Epoch milliseconds (with the microseconds) of an ISO-8601 timestamp such as the server's. */
function epochMs(text) {
  const fraction = /\.(\d+)/.exec(text);
  const whole = Date.parse(text.replace(/\.\d+/, ""));
  return fraction ? whole + Number(`0.${fraction[1]}`) * 1000 : whole;
}

/** The event's head (type, id, sequence, subjects, timestamp: every field before "data", which
 * the server writes last): a client of its own would parse the rest too, but a thousand of them
 * in one process would then measure mostly themselves (results can be tens of KB). */
function head(text) {
  const at = text.indexOf(',"data":');
  return JSON.parse(at < 0 ? text : `${text.slice(0, at)}}`);
}

function now() {
  return performance.timeOrigin + performance.now();
}

function opened() {
  open += 1;
  if (open === count) process.stdout.write(`connected ${count}\n`);
}

/** One event's text as received: its sequence and latency kept by the client. */
function receive(client, text, received) {
  const event = head(text);
  if (event.sequence) {
    client.got.push([event.sequence, received - epochMs(event.timestamp)]);
    client.types.push(event.event_type);
  }
}

function connect(index) {
  const client = { got: [], types: [] };
  clients[index] = client;
  const socket = new WebSocket(url);
  socket.onopen = opened;
  socket.onmessage = (message) => receive(client, message.data, now());
  socket.onclose = (close) => {
    client.closed = close.code;
  };
}

/** The same client over a plain TCP socket ("raw"): the handshake by hand and the server's
 * frames (unmasked, unfragmented text, a close frame or a ping) cut from what each read brought.
 * Node's WebSocket dispatches an event object per message and decodes it in JS: ~30 us of the
 * client's CPU per message, so with 1,000 sockets in one process the last socket of every event
 * waited ~30 ms for the client itself, longer than the server took to write them all. The
 * receipt time is taken once per read, when its bytes reach the client. */
function connectRaw(index) {
  const client = { got: [], types: [] };
  clients[index] = client;
  const target = new URL(url);
  const socket = tcpConnect({ host: target.hostname, port: Number(target.port), noDelay: true });
  let buffered = Buffer.alloc(0);
  let upgraded = false;
  socket.on("error", (error) => {
    client.closed = client.closed ?? `error ${error.code}`;
  });
  socket.on("connect", () => {
    const key = randomBytes(16).toString("base64");
    socket.write(
      `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  });
  socket.on("data", (chunk) => {
    const received = now();
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    if (!upgraded) {
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) return;
      if (!buffered.subarray(0, 12).toString().includes(" 101")) throw new Error(`no upgrade: ${buffered}`);
      upgraded = true;
      buffered = buffered.subarray(end + 4);
      opened();
    }
    while (buffered.length >= 2) {
      const opcode = buffered[0] & 0x0f;
      let length = buffered[1] & 0x7f;
      let start = 2;
      if (length === 126) {
        if (buffered.length < 4) return;
        length = buffered.readUInt16BE(2);
        start = 4;
      } else if (length === 127) {
        if (buffered.length < 10) return;
        length = Number(buffered.readBigUInt64BE(2));
        start = 10;
      }
      if (buffered.length < start + length) return;
      const payload = buffered.subarray(start, start + length);
      buffered = buffered.subarray(start + length);
      if (opcode === 0x1) receive(client, payload.toString("utf8", 0, Math.min(length, 1024)), received); // (head() needs the head only)
      else if (opcode === 0x8) client.closed = length >= 2 ? payload.readUInt16BE(0) : 1005;
      else if (opcode === 0x9) socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | length]), Buffer.alloc(4), payload]));
    }
  });
}

for (let index = 0; index < count; index += 1) {
  (kind === "raw" ? connectRaw : connect)(index);
  if (index % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 50)); // waves: no backlog overflow
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { after, expected } = JSON.parse(line);
  const wanted = new Set(expected);
  const complete = (client) => new Set(client.got.map(([s]) => s).filter((s) => s > after)).size >= wanted.size;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !clients.every(complete)) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const receipts = clients.map((client) => ({
    got: client.got.filter(([s]) => s > after),
    types: client.types.filter((_, n) => client.got[n][0] > after),
    closed: client.closed ?? null,
  }));
  process.stdout.write(`${JSON.stringify(receipts)}\n`, () => process.exit(0)); // exit once written: a pipe is async
}
