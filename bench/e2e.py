#!/usr/bin/env python3
"""Whole-command speed, timed the way a user times it: wall time of one command, from
start to the last file written, on the corpus of bench/make-corpus.sh. Run by
bench/e2e.sh (which builds pixq and kbench first). Prints each figure and its ratio to
its anchor; nothing here passes or fails.

Scenarios (each tool takes turns, REPEATS times, fresh state each run, the last run's set
aside rather than deleted until the end; medians):
  photos     `pixq process large/ --ops thumbnail:1024,quality:85 --workers 1` against
             `vipsthumbnail -s 1024x1024 -o %s.jpg[Q=85]` and ImageMagick
             (`convert -thumbnail 1024x1024 -quality 85`, one process per file), all
             pinned to one core, one thread.
  overhead   the same pixq command, as images/s, against the kernel alone on the same
             files (kbench, in-process, no queue, no store): 1 photo, the 6 photos, and
             the 12 web-size images.
  many       the same on PIXQ_E2E_MANY (default 300) distinct photos: copies of the six,
             each with its own JPEG comment (distinct bytes, so nothing is reused), two
             turns; with each command's peak RSS.
  decode     kbench's thumbnail against libjpeg-turbo's `djpeg` decoding the same files
             at the same DCT scale (M/8) and nothing else: the kernel's floor.
  scaling    `pixq process --workers 2` against `--workers 1` on the 18 photos and web
             images, unpinned (2 cores); beside it the kernel's own speed-up on this
             machine: kbench on all 18 in one process against two processes at once,
             the images split by hand (largest first, to the less loaded half).
  tiny       2,000 distinct 64x64 PNGs -> grayscale, `pixq process --workers 2`, jobs/s
             (and a Pillow loop with no queue at all, when Pillow is installed).
"""

import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib

PIXQ, KBENCH, BENCH_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
REPEATS = int(os.environ.get("PIXQ_E2E_REPEATS", "5"))
CPU = os.environ.get("PIXQ_BENCH_CPU", "0")
ONE = {**os.environ, "VIPS_CONCURRENCY": "1", "MAGICK_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1"}
PIN = ["taskset", "-c", CPU] if shutil.which("taskset") else []
WORK = tempfile.mkdtemp(prefix="pixq-e2e-")


def files(sub):
    d = os.path.join(BENCH_DIR, sub)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith(".jpg"))


LARGE, WEB = files("large"), files("web")


def timed(cmd, env=ONE, prepare=None):
    if prepare:
        prepare()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


SET_ASIDE = os.path.join(WORK, "set-aside")
SET_ASIDE_COUNT = [0]


def fresh(*dirs):
    """Empty folders for the next run. The last run's folders are moved aside, not deleted,
    until the script ends: on ext4 without a journal (this VM's disk) a file created soon
    after thousands were deleted costs up to 20 times more (the inode allocator skips, one
    by one, inodes deleted in the last minutes), which measured the disk's bookkeeping of
    the previous turn, not the tool in this one."""
    def go():
        for d in dirs:
            if os.path.exists(d):
                os.makedirs(SET_ASIDE, exist_ok=True)
                SET_ASIDE_COUNT[0] += 1
                os.rename(d, os.path.join(SET_ASIDE, str(SET_ASIDE_COUNT[0])))
            os.makedirs(d, exist_ok=True)
    return go


def creates_per_second(n=2000):
    """This disk's own pace: n empty files created in a new folder (kept until the end)."""
    d = os.path.join(WORK, "creates")
    fresh(d)()
    t = time.perf_counter()
    for i in range(n):
        os.close(os.open(os.path.join(d, f"f{i:05d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return n / (time.perf_counter() - t)


def link_dir(name, paths):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    for p in paths:
        dst = os.path.join(d, os.path.basename(p))
        if not os.path.exists(dst):
            # A hard link (a copy across filesystems): pixq does not follow a folder's
            # links to files outside it.
            try:
                os.link(p, dst)
            except OSError:
                shutil.copyfile(p, dst)
    return d


def turns(runs, repeats=None, warm_up=True):
    """runs: {name: thunk}; each takes a turn, `repeats` (default REPEATS) times, after one
    untimed warm-up unless told not to; returns {name: median seconds}."""
    if warm_up:
        for f in runs.values():
            f()
    got = {k: [] for k in runs}
    for _ in range(repeats or REPEATS):
        for k, f in runs.items():
            got[k].append(f())
    return {k: statistics.median(v) for k, v in got.items()}


def pixq(src, ops, workers, pin=True):
    home, out = os.path.join(WORK, "home"), os.path.join(WORK, "out")
    cmd = (PIN if pin else []) + [PIXQ, "--home", home, "process", src, "--ops", ops,
                                   "--workers", str(workers), "--out", out]
    return lambda: timed(cmd, prepare=fresh(home, out))


def kernel_cmd(ops, paths):
    return lambda: timed(PIN + [KBENCH, "--ops", ops, "--rounds", "1"] + paths)


def row(label, value, unit, anchor=None, better="lower"):
    r = f"  {label:<58} {value:>9.3f} {unit}"
    if anchor is not None:
        r += f"   ratio {anchor:.3f}"
    print(r, flush=True)


print(f"pixq e2e: {len(LARGE)} photos, {len(WEB)} web images, {REPEATS} turns each, core {CPU}")

# ---------------------------------------------------------------- photos
print("\n== photos: thumbnail 1024, JPEG q85, one core (seconds for the whole command; ratio pixq/tool)")
large = link_dir("large", LARGE)
vout = os.path.join(WORK, "vout")
runs = {
    "pixq": pixq(large, "thumbnail:1024,quality:85", 1),
    "vipsthumbnail": lambda: timed(PIN + ["vipsthumbnail", "-s", "1024x1024", "-o", vout + "/%s.jpg[Q=85]"] + LARGE,
                                   prepare=fresh(vout)),
}
if shutil.which("convert"):
    def magick():
        fresh(vout)()
        t = time.perf_counter()
        for f in LARGE:
            subprocess.run(PIN + ["convert", f, "-thumbnail", "1024x1024", "-quality", "85",
                                  os.path.join(vout, os.path.basename(f))], check=True, env=ONE)
        return time.perf_counter() - t
    runs["imagemagick"] = magick
m = turns(runs)
for k, v in m.items():
    row(k, v, "s", None if k == "pixq" else m["pixq"] / v)

# ---------------------------------------------------------------- overhead
print("\n== whole command against the kernel alone (images/s; ratio command/kernel, goal >= 0.95)")
for label, paths in (("1 photo", LARGE[:1]), ("6 photos", LARGE), ("12 web images", WEB)):
    src = link_dir("set-" + label.replace(" ", "-"), paths)
    # kbench timed as a command too (start-up and reading the files included), taking turns
    # with pixq: this VM's speed drifts by tens of percent within minutes.
    m = turns({"p": pixq(src, "thumbnail:1024,quality:85", 1), "k": kernel_cmd("thumbnail:1024,quality:85", paths)})
    whole, kernel = len(paths) / m["p"], len(paths) / m["k"]
    row(f"{label}: pixq process", whole, "img/s", whole / kernel)
    row(f"{label}: kernel (kbench)", kernel, "img/s")

# ---------------------------------------------------------------- many
MANY = int(os.environ.get("PIXQ_E2E_MANY", "300"))
if MANY > 0:
    print(f"\n== {MANY} distinct photos (the six, each copy with its own comment), one core, 2 turns")
    many = os.path.join(WORK, "many")
    os.makedirs(many, exist_ok=True)
    for n in range(MANY):
        src = LARGE[n % len(LARGE)]
        with open(src, "rb") as f:
            data = f.read()
        note = b"pixq e2e copy %d" % n
        comment = b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note
        with open(os.path.join(many, f"{n:05d}-{os.path.basename(src)}"), "wb") as f:
            f.write(data[:2] + comment + data[2:])
    many_paths = sorted(os.path.join(many, f) for f in os.listdir(many))

    def with_rss(cmd, prepare=None):
        """A timed run that also keeps the command's peak RSS (MB) in `.rss`."""
        def go():
            if prepare:
                prepare()
            t = time.perf_counter()
            child = subprocess.Popen(cmd, env=ONE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            took = time.perf_counter() - t
            if child.returncode != 0:
                raise subprocess.CalledProcessError(child.returncode, cmd)
            go.rss = max(getattr(go, "rss", 0), usage.ru_maxrss // 1024)
            return took
        return go

    home, out = os.path.join(WORK, "home"), os.path.join(WORK, "out")
    p = with_rss(PIN + [PIXQ, "--home", home, "process", many, "--ops", "thumbnail:1024,quality:85",
                        "--workers", "1", "--out", out], fresh(home, out))
    k = with_rss(PIN + [KBENCH, "--ops", "thumbnail:1024,quality:85", "--rounds", "1"] + many_paths)
    # The copies were just written (in the page cache): two turns, no warm-up.
    m = turns({"p": p, "k": k}, repeats=2, warm_up=False)
    whole, kernel = MANY / m["p"], MANY / m["k"]
    row(f"{MANY} photos: pixq process (peak RSS {p.rss} MB)", whole, "img/s", whole / kernel)
    row(f"{MANY} photos: kernel (kbench, all inputs in memory: {k.rss} MB)", kernel, "img/s")
    os.makedirs(SET_ASIDE, exist_ok=True)
    os.rename(many, os.path.join(SET_ASIDE, "many"))

# ---------------------------------------------------------------- decode floor
if shutil.which("djpeg"):
    print("\n== the kernel against decoding alone (images/s; ratio kernel/djpeg, goal >= 0.9)")

    def jpeg_size(p):
        with open(p, "rb") as f:
            data = f.read(1 << 16)
        i = 2
        while i < len(data):
            marker, seglen = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + seglen
        raise ValueError(p)

    def scale(p):
        # The kernel's rule: the smallest M/8 that keeps twice the output size.
        w, h = jpeg_size(p)
        s = 1024 / max(w, h)
        nw, nh = round(w * s) * 2, round(h * s) * 2
        return next((m for m in range(1, 9) if -(-w * m // 8) >= nw and -(-h * m // 8) >= nh), 8)

    def djpeg():
        t = time.perf_counter()
        for f in LARGE:
            subprocess.run(PIN + ["djpeg", "-scale", f"{scale(f)}/8", "-outfile", os.devnull, f], check=True, env=ONE)
        return time.perf_counter() - t
    # djpeg is one process per file (its start-up, about 1 ms, is inside its figure); kbench
    # one process for all, reading the files included.
    m = turns({"d": djpeg, "k": kernel_cmd("thumbnail:1024,quality:85", LARGE)})
    dj, kernel = len(LARGE) / m["d"], len(LARGE) / m["k"]
    row("kernel thumbnail 1024 (decode, resize, encode)", kernel, "img/s", kernel / dj)
    row("djpeg at the same scale (decode only)", dj, "img/s")

# ---------------------------------------------------------------- scaling
print("\n== two workers against one (18 images, unpinned; ratio = speed-up, goal >= 1.9)")
both = link_dir("both", LARGE + WEB)
# The machine's own limit, as the anchor: the kernel alone on the same 18 images, in one
# process against two processes at once with the work split by hand (largest first, each
# image to the less loaded half, file size standing for work).
halves, load = ([], []), [0, 0]
for p in sorted(LARGE + WEB, key=os.path.getsize, reverse=True):
    h = load.index(min(load))
    halves[h].append(p)
    load[h] += os.path.getsize(p)


def kernel_two():
    t = time.perf_counter()
    ps = [subprocess.Popen([KBENCH, "--ops", "thumbnail:1024,quality:85", "--rounds", "1"] + h, env=ONE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in halves]
    if any(p.wait() for p in ps):
        raise RuntimeError("kbench failed")
    return time.perf_counter() - t


m = turns({"1": pixq(both, "thumbnail:1024,quality:85", 1, pin=False),
           "2": pixq(both, "thumbnail:1024,quality:85", 2, pin=False),
           "k1": lambda: timed([KBENCH, "--ops", "thumbnail:1024,quality:85", "--rounds", "1"] + LARGE + WEB),
           "k2": kernel_two})
row("--workers 1", m["1"], "s")
row("--workers 2", m["2"], "s", m["1"] / m["2"])
row("kernel alone, one process (kbench)", m["k1"], "s")
row("kernel alone, two processes, split by hand (this machine's limit)", m["k2"], "s", m["k1"] / m["k2"])

# ---------------------------------------------------------------- tiny
print("\n== 2,000 distinct 64x64 PNGs -> grayscale, --workers 2 (jobs/s; goal >= 2,500)")
tiny = os.path.join(WORK, "tiny")
os.makedirs(tiny, exist_ok=True)


def png(w, h, seed):
    rows = []
    for y in range(h):
        r = bytearray((x * 7 + y * 3 + seed) % 256 for x in range(w * 3))
        if y == 0:
            r[0:3] = bytes([seed % 256, seed // 256 % 256, 77])
        rows.append(b"\0" + bytes(r))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


for i in range(2000):
    with open(os.path.join(tiny, f"t{i:04d}.png"), "wb") as f:
        f.write(png(64, 64, i))
home, out = os.path.join(WORK, "home"), os.path.join(WORK, "out")
runs = {"pixq": lambda: timed([PIXQ, "--home", home, "process", tiny, "--ops", "grayscale", "--workers", "2",
                               "--out", out], prepare=fresh(home, out))}
try:
    import PIL  # noqa: F401
    pil_out = os.path.join(WORK, "pil")
    code = ("import os,sys\nfrom PIL import Image\nsrc,dst=sys.argv[1],sys.argv[2]\n"
            "for n in sorted(os.listdir(src)):\n    Image.open(os.path.join(src,n)).convert('L').save(os.path.join(dst,n))\n")
    runs["pillow loop"] = lambda: timed([sys.executable, "-c", code, tiny, pil_out], prepare=fresh(pil_out))
except ImportError:
    pass
before = creates_per_second()
m = turns(runs)
for k, v in m.items():
    row(k, 2000 / v, "jobs/s", None if k == "pixq" else m[k] / m["pixq"])
# Each output is a file: the command is bounded by how fast this disk creates them.
row("the disk alone, before: empty files created in a new folder", before, "files/s")
row("the disk alone, after", creates_per_second(), "files/s")
rm = [PIXQ, "--json", "--home", home, "process", tiny, "--ops", "grayscale", "--workers", "2", "--out", out]
fresh(home, out)()
timeline = json.loads(subprocess.run(rm, check=True, capture_output=True, text=True).stdout)["timeline"]
print("  one run's timeline (s):", ", ".join(f"{k} {v:.2f}" for k, v in sorted(timeline.items(), key=lambda kv: kv[1])))
shutil.rmtree(WORK, ignore_errors=True)
