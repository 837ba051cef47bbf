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

import { createInterface } from "node:readline";

const [url, countText] = process.argv.slice(2);
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

function connect(index) {
  const client = { got: [], types: [] };
  clients[index] = client;
  const socket = new WebSocket(url);
  socket.onopen = () => {
    open += 1;
    if (open === count) process.stdout.write(`connected ${count}\n`);
  };
  socket.onmessage = (message) => {
    const received = now();
    const event = head(message.data);
    if (event.sequence) {
      client.got.push([event.sequence, received - epochMs(event.timestamp)]);
      client.types.push(event.event_type);
    }
  };
  socket.onclose = (close) => {
    client.closed = close.code;
  };
}

for (let index = 0; index < count; index += 1) {
  connect(index);
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
