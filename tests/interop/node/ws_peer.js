// The `ws` npm package as a peer of corral, driven by tests/interop/test_node_ws.py.
//
//   node ws_peer.js server '<perMessageDeflate JSON>'   echo server on 127.0.0.1, random port;
//                                                       prints "listening PORT", then one JSON
//                                                       line per handshake it answers
//   node ws_peer.js client URL '<perMessageDeflate JSON>' COUNT
//                                                       sends COUNT messages of growing size,
//                                                       text and binary, checks each echo,
//                                                       prints one JSON line with the outcome
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function server(deflate) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: deflate,
                                    maxPayload: 16 * 1024 * 1024 });
  wss.on('listening', () => report({ listening: wss.address().port }));
  wss.on('headers', (headers, request) => {
    report({ offer: request.headers['sec-websocket-extensions'] || null,
             answer: headers.find((h) => h.toLowerCase().startsWith('sec-websocket-extensions'))
               || null });
  });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  process.on('SIGTERM', () => wss.close(() => process.exit(0)));
}

function client(url, deflate, count) {
  const ws = new WebSocket(url, { perMessageDeflate: deflate });
  const sizes = [];
  for (let i = 0; i < count; i++) sizes.push(i % 2 ? 37 * i * i : i * 1000);
  let next = 0;
  let sent = null;
  const send = () => {
    const size = sizes[next];
    const text = next % 3 === 0;
    const body = 'corral '.repeat(Math.ceil(size / 7) + 1).slice(0, size);
    sent = { text, body };
    ws.send(text ? body : Buffer.from(body), { binary: !text });
  };
  ws.on('upgrade', (response) => {
    report({ answer: response.headers['sec-websocket-extensions'] || null });
  });
  ws.on('open', send);
  ws.on('message', (data, isBinary) => {
    const got = data.toString();
    if (isBinary === sent.text || got !== sent.body) {
      report({ error: `echo ${next} differs` });
      process.exit(1);
    }
    next += 1;
    if (next === sizes.length) ws.close(1000, 'done');
    else send();
  });
  ws.on('close', (code) => {
    report({ echoed: next, code });
    process.exit(next === sizes.length && code === 1000 ? 0 : 1);
  });
  ws.on('error', (err) => {
    report({ error: String(err) });
    process.exit(1);
  });
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') server(JSON.parse(args[0]));
else if (mode === 'client') client(args[0], JSON.parse(args[1]), Number(args[2]));
else {
  process.stderr.write('usage: ws_peer.js server DEFLATE | client URL DEFLATE COUNT\n');
  process.exit(2);
}
