"""A dev server with nothing beyond Python's standard library, the kind a project runs while it is
being built. It answers on $PORT:

    GET /            index.html, with the kernel it runs on
    GET /stream?mib=N  N MiB streamed in 64 KiB chunks (chunked transfer encoding)
    GET /ws          a WebSocket that echoes each text message
"""
import base64
import hashlib
import http.server
import os
import platform
import struct

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket_echo()
        if path == "/stream":
            return self.stream(int(dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("mib", "1")))
        with open("index.html", "rb") as f:
            body = f.read().replace(b"{kernel}", platform.release().encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, mib):
        chunk = bytes(range(256)) * 256  # 64 KiB
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(mib * 16):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def websocket_echo(self):
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WEBSOCKET_GUID).encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        while True:
            header = self.rfile.read(2)
            if len(header) < 2:
                return
            opcode, length = header[0] & 0x0F, header[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 0x8:  # close
                self.wfile.write(b"\x88\x00")
                return
            size = struct.pack("B", len(payload)) if len(payload) < 126 else b"\x7e" + struct.pack(">H", len(payload))
            self.wfile.write(bytes([0x80 | opcode]) + size + payload)
            self.wfile.flush()


server = http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
print(f"dev server listening on port {server.server_address[1]}", flush=True)
server.serve_forever()
