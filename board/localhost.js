// Preloaded into Omniboard (node -r board/localhost.js ...) by localboard/.
// 1. Omniboard calls listen(PORT) with no host, i.e. on every interface: force 127.0.0.1.
// 2. Omniboard takes its login only as "-u USER:PASSWORD:SECRET" on the command line, which
//    every user of the machine can read: take it from TOYLAB_OMNIBOARD_LOGIN instead and
//    hand it to Omniboard's argument parser in-process (the real command line stays clean).
'use strict';
const net = require('net');

const HOST = '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === 'object') {
    args[0] = { ...args[0], host: HOST };
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const callback = args.find((a) => typeof a === 'function');
    args = [{ port: Number(args[0]), host: HOST }, ...(callback ? [callback] : [])];
  }
  return listen.apply(this, args);
};

if (process.env.TOYLAB_OMNIBOARD_LOGIN) {
  process.argv.push('-u', process.env.TOYLAB_OMNIBOARD_LOGIN);
  delete process.env.TOYLAB_OMNIBOARD_LOGIN;
}
