"""A stand-in for the vLLM server, for supervisor tests: answers /health and /v1/completions.

Run as ``python fake_engine.py PORT [--child] [--exit-now]``. ``--child`` also starts a
sleeping child process in the same process group (like vLLM's EngineCore) and writes its pid
to ``child.pid`` beside the log; ``--exit-now`` exits with code 3 at once (a broken engine);
``/health`` answers 500 while a file ``unhealthy`` exists in the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(500 if os.path.exists("unhealthy") else 200, {})
        else:
            self._reply(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        self._reply(200, {"choices": [{"text": "x"}], "usage": {"completion_tokens": 1}})

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1])
    if "--exit-now" in sys.argv:
        print("fake engine: refusing to start", flush=True)
        sys.exit(3)
    if "--child" in sys.argv:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open("child.pid", "w") as fh:
            fh.write(str(child.pid))
    print(f"fake engine on {port}", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
