"""Time from starting a server command to its first 200: median of RUNS starts.

usage: first_response.py RUNS URL [--prepare SHELL] -- COMMAND...
The command is started, URL is asked every half millisecond until it answers 200, and the
server is stopped with SIGTERM. Prints the median in milliseconds."""

import http.client
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse


def first_200(url: str, command: list[str]) -> float:
    parts = urllib.parse.urlsplit(url)
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{command} exited with {proc.returncode} before answering")
            try:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
                conn.request("GET", parts.path)
                if conn.getresponse().status == 200:
                    return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.0005)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    args = sys.argv[1:]
    runs, url = int(args[0]), args[1]
    prepare = None
    rest = args[2:]
    if rest[0] == "--prepare":
        prepare, rest = rest[1], rest[2:]
    command = rest[1:] if rest[0] == "--" else rest
    times = []
    for _ in range(runs):
        if prepare:
            subprocess.run(prepare, shell=True, check=True)
        times.append(first_200(url, command))
    print(f"{statistics.median(times) * 1e3:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
