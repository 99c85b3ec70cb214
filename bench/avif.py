"""AVIF: pixq against libvips heifsave (AV1), at matched file size. See bench/avif.sh."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

PIXQ, LARGE = sys.argv[1], sys.argv[2]
CPU = os.environ.get("PIXQ_BENCH_CPU", "0")
SIZE = 1600
PIN = ["taskset", "-c", CPU]
photos = sorted(glob.glob(os.path.join(LARGE, "*.jpg")))
work = tempfile.mkdtemp()


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(PIN + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def pixq(ops, out):
    home = os.path.join(work, "home")
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return timed([PIXQ, "--home", home, "process", LARGE, "--ops", ops, "--out", out, "--workers", "1"])


def vips(q, effort, out):
    os.makedirs(out, exist_ok=True)
    t = 0.0
    for p in photos:
        name = os.path.splitext(os.path.basename(p))[0] + ".avif"
        dst = os.path.join(out, name)
        t += timed(["vips", "thumbnail", p, f"{dst}[Q={q},compression=av1,effort={effort}]", str(SIZE)])
    return t


def total(out):
    return sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))


def psnr(out):
    """Mean PSNR of every .avif in `out` against libvips' 1600 px PNG thumbnail of its photo."""
    import math

    vals = []
    for p in photos:
        stem = os.path.splitext(os.path.basename(p))[0]
        ref = os.path.join(work, "ref", stem + ".v")
        if not os.path.exists(ref):
            os.makedirs(os.path.dirname(ref), exist_ok=True)
            subprocess.run(["vips", "thumbnail", p, ref, str(SIZE)], check=True)
        dec = os.path.join(work, "dec.v")
        subprocess.run(["vips", "copy", os.path.join(out, stem + ".avif"), dec], check=True, stderr=subprocess.DEVNULL)
        # mean squared difference through vips itself: (a - b)^2 averaged over all bands
        d = os.path.join(work, "diff.v")
        subprocess.run(["vips", "subtract", ref, dec, d], check=True)
        sq = os.path.join(work, "sq.v")
        subprocess.run(["vips", "multiply", d, d, sq], check=True)
        mse = float(subprocess.run(["vips", "avg", sq], capture_output=True, text=True, check=True).stdout)
        vals.append(10 * math.log10(255 * 255 / max(mse, 1e-9)))
    return sum(vals) / len(vals)


print(f"{len(photos)} photos in {LARGE}, thumbnail {SIZE} px as AVIF, core {CPU}")
rows = []
for ops in ["thumbnail:1600,format:avif", "thumbnail:1600,format:avif,speed:8", "thumbnail:1600,format:avif,speed:4"]:
    out = os.path.join(work, "pixq")
    t = pixq(ops, out)
    size = total(out)
    q_db = psnr(out)
    # libvips' Q whose files total closest to pixq's (file size is monotone in Q).
    lo, hi, best = 1, 100, None
    while lo <= hi:
        q = (lo + hi) // 2
        vout = os.path.join(work, f"vips-{q}")
        shutil.rmtree(vout, ignore_errors=True)
        vips(q, 4, vout)
        s = total(vout)
        if best is None or abs(s - size) < abs(best[1] - size):
            best = (q, s, vout)
        if s < size:
            lo = q + 1
        else:
            hi = q - 1
    q, vsize, vout = best
    vt = vips(q, 4, vout)
    v_db = psnr(vout)
    print(
        f"pixq {ops:<38} {t:6.2f} s {size / 1024:7.0f} KiB {q_db:5.2f} dB | "
        f"vips Q={q:<3} effort 4 {vt:6.2f} s {vsize / 1024:7.0f} KiB {v_db:5.2f} dB | "
        f"time ratio {t / vt:.2f}, size ratio {size / vsize:.2f}"
    )
shutil.rmtree(work, ignore_errors=True)
