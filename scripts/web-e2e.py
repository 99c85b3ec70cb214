#!/usr/bin/env python3
"""End to end through `pixq serve`, as a user's HTTP client and a user's browser would go.

1. The API with plain HTTP requests (urllib: what curl does): create a batch, upload three
   sample photos to their signed URLs, start, follow the server-sent events until done,
   check each output's size against its PNG header, download the ZIP and check it holds
   the same bytes; an on-the-fly URL from `pixq sign` renders, the second request is a
   cache hit with the same bytes and ETag, and If-None-Match gives 304.
2. The page in headless Chromium through chromedriver (WebDriver over HTTP): pick the three
   photos, process, wait for the gallery, check the three results' dimensions, save a
   screenshot.

Usage: web-e2e.py PIXQ_BINARY OUTPUT_DIR. Talks to 127.0.0.1 only.
"""
import base64
import io
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

PIXQ, OUT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = [os.path.join(ROOT, "samples", n) for n in ("coffee.jpg", "chelsea.jpg", "rocket.jpg")]
SIDE = 300
passed = 0


def check(cond, what):
    global passed
    if not cond:
        raise SystemExit(f"web-e2e: FAILED: {what}")
    passed += 1


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def png_size(data):
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "output is a PNG")
    return struct.unpack(">II", data[16:24])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def api_flow(base, home):
    pipeline = f"thumbnail:{SIDE},format:png"
    files = [{"name": os.path.basename(p), "size": os.path.getsize(p), "type": "image/jpeg"} for p in SAMPLES]
    st, _, body = request("POST", base + "/api/batches", json.dumps({"pipeline": pipeline, "files": files}).encode(),
                          {"Content-Type": "application/json"})
    check(st == 201, f"create: {st} {body[:200]!r}")
    created = json.loads(body)
    # DNS rebinding and cross-site writes: the server answers only this machine's names,
    # and refuses a write a page of another site sends.
    st, _, body = request("GET", base + "/api/ops", headers={"Host": "evil.example"})
    check(st == 421, f"a request for another host: {st} {body[:200]!r}")
    st, _, body = request("POST", base + "/api/batches", json.dumps({"pipeline": pipeline, "files": files}).encode(),
                          {"Content-Type": "application/json", "Origin": "http://evil.example"})
    check(st == 403, f"a cross-site create: {st} {body[:200]!r}")
    batch = created["batch"]
    for path, up in zip(SAMPLES, created["uploads"]):
        with open(path, "rb") as f:
            st, _, body = request(up["method"], base + up["url"], f.read(), up["headers"])
        check(st == 200, f"upload {path}: {st} {body[:200]!r}")
    st, _, body = request("POST", base + f"/api/batches/{batch}/start")
    check(st == 202 and json.loads(body)["jobs"] == 3, f"start: {st} {body!r}")
    # Server-sent events until `done`.
    final = None
    with urllib.request.urlopen(base + f"/api/batches/{batch}/events", timeout=120) as r:
        check(r.headers["Content-Type"] == "text/event-stream", "SSE content type")
        event = None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "done":
                final = json.loads(line[6:])
                break
    check(final is not None and final["counts"]["ok"] == 3, f"all three ok: {final and final['counts']}")
    outputs = {}
    for f in final["files"]:
        st, h, data = request("GET", base + f["output_url"])
        w, hgt = png_size(data)
        check(st == 200 and max(w, hgt) == SIDE and (w, hgt) == (f["width"], f["height"]), f"{f['name']}: {w}x{hgt}")
        check(len(data) == f["bytes"], f"{f['name']}: bytes as reported")
        outputs[f["name"].rsplit(".", 1)[0]] = data
    st, h, z = request("GET", base + f"/api/batches/{batch}/zip")
    check(st == 200 and h["Content-Type"] == "application/zip", "zip response")
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        check(zf.testzip() is None, "zip CRCs")
        names = zf.namelist()
        check(len(names) == 3, f"zip entries {names}")
        for n in names:
            stem = n.split("-", 1)[1].rsplit(".", 1)[0]
            check(zf.read(n) == outputs[stem], f"zip entry {n} = its output")
    # pixq status reads the same batch.
    st = subprocess.run([PIXQ, "--home", home, "status", batch], capture_output=True, text=True)
    check(st.returncode == 0 and "3 ok" in st.stdout, f"pixq status: {st.stdout} {st.stderr}")

    # On-the-fly: a key under images/, signed by `pixq sign` with the server's key.
    os.makedirs(os.path.join(home, "store", "pixq", "images", "cats"), exist_ok=True)
    shutil.copy(os.path.join(ROOT, "samples", "chelsea.jpg"), os.path.join(home, "store", "pixq", "images", "cats"))
    path = subprocess.run([PIXQ, "--home", home, "sign", "cats/chelsea.jpg", "--ops", "thumbnail:160,format:auto"],
                          capture_output=True, text=True, check=True).stdout.strip()
    accept = {"Accept": "image/webp,*/*"}
    st1, h1, b1 = request("GET", base + path, headers=accept)
    check(st1 == 200 and h1["Content-Type"] == "image/webp" and h1.get("Vary") == "Accept", f"img miss: {st1} {h1}")
    st2, h2, b2 = request("GET", base + path, headers=accept)
    check(st2 == 200 and b2 == b1 and h2["ETag"] == h1["ETag"], "img hit: same bytes and ETag")
    st3, _, b3 = request("GET", base + path, headers={**accept, "If-None-Match": h1["ETag"]})
    check(st3 == 304 and b3 == b"", f"img 304: {st3}")
    st4, _, _ = request("GET", base + path.replace("thumbnail:160", "thumbnail:161"), headers=accept)
    check(st4 == 403, f"tampered img URL: {st4}")
    return batch


def browser_flow(base):
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if request("GET", wd + "/status")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1100", "--no-first-run", "--disable-background-networking"]}}}}
        st, _, body = request("POST", wd + "/session", json.dumps(caps).encode(), {"Content-Type": "application/json"})
        check(st == 200, f"WebDriver session: {body[:300]!r}")
        sid = json.loads(body)["value"]["sessionId"]
        s = f"{wd}/session/{sid}"

        def call(method, path, payload=None):
            data = None if payload is None else json.dumps(payload).encode()
            st, _, body = request(method, s + path, data, {"Content-Type": "application/json"})
            value = json.loads(body)["value"]
            check(st == 200, f"WebDriver {path}: {value}")
            return value

        def script(js):
            return call("POST", "/execute/sync", {"script": js, "args": []})

        def wait(js, what, timeout=90):
            end = time.time() + timeout
            while time.time() < end:
                if script(js):
                    return
                time.sleep(0.2)
            check(False, f"browser: timed out waiting for {what}")

        try:
            call("POST", "/url", {"url": base + "/"})
            wait("return document.getElementById('verdict').className === 'ok'", "the pipeline to validate")
            field = call("POST", "/element", {"using": "css selector", "value": "#pipeline"})
            eid = next(iter(field.values()))
            call("POST", f"/element/{eid}/clear", {})
            call("POST", f"/element/{eid}/value", {"text": f"thumbnail:{SIDE},format:webp"})
            wait("return document.getElementById('verdict').textContent.startsWith('OK: thumbnail:%d,format:webp')" % SIDE,
                 "live validation of the typed pipeline")
            files = call("POST", "/element", {"using": "css selector", "value": "#files"})
            call("POST", f"/element/{next(iter(files.values()))}/value", {"text": "\n".join(SAMPLES)})
            wait("return document.querySelectorAll('.card').length === 3 && !document.getElementById('go').disabled",
                 "three cards and an enabled button")
            go = call("POST", "/element", {"using": "css selector", "value": "#go"})
            call("POST", f"/element/{next(iter(go.values()))}/click", {})
            wait("return document.body.dataset.done === 'true'", "the batch to finish")
            wait("return [0,1,2].every(i => { const im = document.getElementById('out' + i); return im.complete && im.naturalWidth > 0; })",
                 "the three results to load")
            dims = script("return [0,1,2].map(i => { const im = document.getElementById('out' + i); return [im.naturalWidth, im.naturalHeight]; })")
            for w, h in dims:
                check(max(w, h) == SIDE, f"browser result {w}x{h}")
            statuses = script("return [0,1,2].map(i => document.getElementById('st' + i).textContent)")
            check(statuses == ["ok"] * 3, f"statuses {statuses}")
            png = base64.b64decode(call("GET", "/screenshot"))
            os.makedirs(OUT, exist_ok=True)
            with open(os.path.join(OUT, "page.png"), "wb") as f:
                f.write(png)
            check(png[:8] == b"\x89PNG\r\n\x1a\n", "screenshot")
        finally:
            request("DELETE", s)
    finally:
        driver.kill()


def main():
    home = tempfile.mkdtemp(prefix="pixq-web-e2e-")
    # Started with the soft limit on open files most systems give (1,024): serve raises it.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    server = subprocess.Popen([PIXQ, "--home", home, "serve", "--port", "0", "--workers", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: resource.setrlimit(
                                  resource.RLIMIT_NOFILE,
                                  (1024 if hard == resource.RLIM_INFINITY else min(1024, hard), hard)))
    try:
        line = server.stdout.readline()
        check(line.startswith("pixq serve: http://127.0.0.1:"), f"serve prints its URL: {line!r}")
        # Room for its connections and the files it sends: the soft limit on open files raised.
        if os.path.exists(f"/proc/{server.pid}/limits"):
            with open(f"/proc/{server.pid}/limits") as f:
                soft, hard = next(l for l in f if l.startswith("Max open files")).split()[3:5]
            want = min(65536, int(hard)) if hard.isdigit() else 65536
            check(soft.isdigit() and int(soft) == want, f"open files soft limit {soft} (hard {hard})")
        base = line.split()[2].rstrip("/")
        check(request("GET", base + "/healthz")[2] == b"ok", "healthz")
        api_flow(base, home)
        browser_flow(base)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            raise SystemExit("web-e2e: FAILED: pixq serve did not stop within 20 s of SIGTERM")
        shutil.rmtree(home, ignore_errors=True)
    check(server.returncode == 0, f"pixq serve exit status {server.returncode}")
    print(f"web-e2e: {passed} checks passed; screenshot in {os.path.join(OUT, 'page.png')}")


main()
