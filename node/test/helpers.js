// Loopback HTTP servers that record what reached them, for the client tests.
"use strict";
const http = require("node:http");
const { parseBaggage } = require("..");

/** A server on 127.0.0.1; `/redirect?to=URL&code=N` answers N with Location: URL. */
async function captureServer(label) {
  const received = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const url = new URL(req.url, "http://x");
      const baggage = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        if (req.rawHeaders[i].toLowerCase() === "baggage") baggage.push(req.rawHeaders[i + 1]);
      }
      received.push({
        label,
        path: url.pathname,
        tag: url.searchParams.get("tag"),
        traceparent: req.headers.traceparent,
        baggage,
        members: parseBaggage(baggage),
      });
      if (url.pathname === "/redirect") {
        res.writeHead(Number(url.searchParams.get("code") || 302), {
          location: url.searchParams.get("to"),
          "content-length": "0",
        });
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    received,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

function langfuseMembers(request) {
  return request.members.filter(([key]) => key.startsWith("langfuse"));
}

module.exports = { captureServer, langfuseMembers };
