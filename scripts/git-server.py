#!/usr/bin/env python3
"""An HTTPS Git server for the bed: Git's smart HTTP protocol (`git http-backend`), on an address
the real node's pods may reach (the bed's outside address), with a certificate authority of its own.

    git-server.py --address 198.19.0.1 --root DIR --tls-dir DIR

Serves every repository under --root read-only. Makes --tls-dir/ca.crt (the authority to trust;
give it to the operator as `gitCaBundle`) and a server certificate for --address, if absent.
Prints `https://<address>:<port>` once listening.
"""
import argparse
import http.server
import os
import ssl
import subprocess
import sys


def certificates(tls_dir, address):
    if os.path.exists(os.path.join(tls_dir, "server.crt")):
        return
    os.makedirs(tls_dir, exist_ok=True)
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tls_dir)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-days", "30", "-subj", "/CN=ooda bed git CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-new", *curve, "-subj", f"/CN={address}", "-addext", f"subjectAltName=IP:{address}",
        "-keyout", "server.key", "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "30", "-copy_extensions", "copyall", "-out", "server.crt")


class GitHandler(http.server.BaseHTTPRequestHandler):
    root = "."
    max_body = 16 * 1024 * 1024

    def do_GET(self):
        self.backend(b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or -1)
        if not 0 <= length <= self.max_body:
            self.send_error(411 if length < 0 else 413)
            return
        self.backend(self.rfile.read(length))

    def backend(self, body):
        path, _, query = self.path.partition("?")
        if ".." in path.split("/"):
            self.send_error(404)
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        result = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        sys.stderr.write("git-server: " + format % args + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--root", required=True)
    parser.add_argument("--tls-dir", required=True)
    options = parser.parse_args()
    certificates(options.tls_dir, options.address)
    GitHandler.root = os.path.abspath(options.root)
    server = http.server.ThreadingHTTPServer((options.address, options.port), GitHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(options.tls_dir, "server.crt"), os.path.join(options.tls_dir, "server.key"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"https://{options.address}:{server.server_address[1]}", flush=True)
    server.serve_forever()


main()
