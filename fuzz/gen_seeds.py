#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/ (standard library only; the files are checked in,
so this only needs re-running to change them). Run from anywhere: python3 fuzz/gen_seeds.py"""

import json
import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def write(kind, name, data):
    os.makedirs(os.path.join(SEEDS, kind), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(SEEDS, kind, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- PNG
def png(w, h, bit_depth, color_type, raw_rows, extra=b"", interlace=0):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


# 4x3 RGB8, filter 0 on every row.
rgb = b"".join(b"\x00" + b"".join(bytes((x * 60, y * 100, 128)) for x in range(4)) for y in range(3))
write("probe", "rgb8-4x3.png", png(4, 3, 8, 2, rgb))
# 2x2 RGBA16 with a sub filter on the second row.
rgba16 = b"\x00" + b"\x12\x34" * 8 + b"\x01" + b"\x00\x10" * 8
write("probe", "rgba16-2x2.png", png(2, 2, 16, 6, rgba16))
# 3x3 palette with transparency (tRNS) and an sRGB chunk.
plte = png_chunk(b"PLTE", bytes((255, 0, 0, 0, 255, 0, 0, 0, 255))) + png_chunk(b"tRNS", b"\x80\xff")
pal = b"".join(b"\x00" + bytes((x + y) % 3 for x in range(3)) for y in range(3))
write("probe", "palette-3x3.png", png(3, 3, 8, 3, pal, png_chunk(b"sRGB", b"\x00") + plte))
# 5x5 gray8 Adam7-interlaced: the passes' rows, each with filter byte 0.
passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
inter = b""
for x0, y0, dx, dy in passes:
    cols = len(range(x0, 5, dx))
    for y in range(y0, 5, dy):
        if cols:
            inter += b"\x00" + bytes(((x * 50 + y * 10) & 0xFF for x in range(x0, 5, dx)))
write("probe", "gray-interlaced-5x5.png", png(5, 5, 8, 0, inter, interlace=1))


# ---------------------------------------------------------------- GIF
def gif_frame(w, h, pixels, delay=10):
    # LZW with min code size 2 (clear=4, end=5), a clear code before every 2 pixels so every
    # code stays 3 bits wide.
    codes = []
    for i in range(0, len(pixels), 2):
        codes.append(4)
        codes.extend(pixels[i : i + 2])
    codes.append(5)
    bits, nbits, out = 0, 0, bytearray()
    for c in codes:
        bits |= c << nbits
        nbits += 3
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    gce = b"\x21\xf9\x04\x05" + struct.pack("<H", delay) + b"\x03\x00"  # transparent index 3
    desc = b"\x2c" + struct.pack("<HHHH", 0, 0, w, h) + b"\x00"
    return gce + desc + b"\x02" + bytes((len(out),)) + bytes(out) + b"\x00"


def gif(w, h, frames):
    head = b"GIF89a" + struct.pack("<HH", w, h) + b"\x91\x00\x00"  # global table of 4 colours
    table = bytes((0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255))
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return head + table + loop + b"".join(frames) + b"\x3b"


write("probe", "anim-2frames-4x4.gif", gif(4, 4, [gif_frame(4, 4, [i % 4 for i in range(16)]), gif_frame(4, 4, [(i // 4) % 4 for i in range(16)])]))


# ---------------------------------------------------------------- BMP
def bmp24(w, h):
    stride = (w * 3 + 3) & ~3
    rows = b"".join(b"".join(bytes((x * 80, y * 80, 200)) for x in range(w)).ljust(stride, b"\x00") for y in range(h))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(rows), 0, 0, 54) + info + rows


def bmp8(w, h):
    stride = (w + 3) & ~3
    rows = b"".join(bytes(((x + y) % 2 for x in range(w))).ljust(stride, b"\x00") for y in range(h))
    palette = bytes((0, 0, 0, 0, 255, 255, 255, 0))
    info = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 8, 0, len(rows), 0, 0, 2, 0)  # top-down
    off = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", off + len(rows), 0, 0, off) + info + palette + rows


write("probe", "rgb24-3x2.bmp", bmp24(3, 2))
write("probe", "pal8-topdown-5x3.bmp", bmp8(5, 3))


# ---------------------------------------------------------------- TIFF
def tiff(w, h, spp, photometric, pixels, orientation=None):
    entries = []  # (tag, type, count, value-or-offset bytes) ; type 3 = SHORT, 4 = LONG
    n = 9 + (1 if orientation else 0)
    ifd_off = 8
    ifd_len = 2 + 12 * n + 4
    extra_off = ifd_off + ifd_len
    extra = b""
    if spp > 1:
        bps = ("long", extra_off + len(extra))
        extra += struct.pack("<" + "H" * spp, *([8] * spp))
    else:
        bps = ("short", 8)
    data_off = extra_off + len(extra)
    entries.append((256, 3, 1, w))
    entries.append((257, 3, 1, h))
    entries.append((258, 3, spp, bps[1]))
    entries.append((259, 3, 1, 1))
    entries.append((262, 3, 1, photometric))
    entries.append((273, 4, 1, data_off))
    if orientation:
        entries.append((274, 3, 1, orientation))
    entries.append((277, 3, 1, spp))
    entries.append((278, 3, 1, h))
    entries.append((279, 4, 1, len(pixels)))
    ifd = struct.pack("<H", n)
    for tag, typ, count, val in entries:
        if typ == 3 and count == 1:
            ifd += struct.pack("<HHIHH", tag, typ, count, val, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, count, val)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_off) + ifd + extra + pixels


write("probe", "rgb8-3x2.tiff", tiff(3, 2, 3, 2, bytes(range(0, 18 * 10, 10))))
write("probe", "gray8-orient6-4x2.tiff", tiff(4, 2, 1, 1, bytes(range(0, 256, 32)), orientation=6))


# ---------------------------------------------------------------- WebP (lossless, VP8L)
def vp8l_solid(w, h, argb, alpha):
    # No transform, no colour cache, no meta prefix codes, five "simple" prefix codes of one
    # 8-bit symbol each: every pixel then takes zero bits.
    bits, nbits = 0, 0

    def put(v, n):
        nonlocal bits, nbits
        bits |= v << nbits
        nbits += n

    put(w - 1, 14)
    put(h - 1, 14)
    put(1 if alpha else 0, 1)
    put(0, 3)  # version
    put(0, 1)  # no transform
    put(0, 1)  # no colour cache
    put(0, 1)  # no meta prefix codes
    a, r, g, b = argb
    for sym in (g, r, b, a):
        put(1, 1)  # simple code
        put(0, 1)  # one symbol
        put(1, 1)  # 8-bit symbol
        put(sym, 8)
    put(1, 1)  # distance code: simple, one 1-bit symbol (0)
    put(0, 1)
    put(0, 1)
    put(0, 1)
    body = b"\x2f" + bits.to_bytes((nbits + 7) // 8, "little")
    # The chunk size excludes the pad byte that makes a chunk even.
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


write("probe", "solid-lossless-6x4.webp", vp8l_solid(6, 4, (255, 200, 100, 50), False))
write("probe", "solid-alpha-lossless-3x5.webp", vp8l_solid(3, 5, (128, 10, 20, 30), True))


# ---------------------------------------------------------------- JPEG (baseline, DC only)
def seg(marker, payload):
    return b"\xff" + bytes((marker,)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(w, h, comps, mcu_blocks, exif_orientation=None):
    """comps: [(id, h, v)], mcu_blocks: blocks per MCU. One DC table and one AC table, each
    with a single 1-bit code (DC category 0, AC end-of-block): every block is '00'."""
    out = b"\xff\xd8"
    out += seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if exif_orientation:
        tiff_hdr = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
        tiff_hdr += struct.pack("<HHIHH", 0x0112, 3, 1, exif_orientation, 0) + struct.pack("<I", 0)
        out += seg(0xE1, b"Exif\x00\x00" + tiff_hdr)
    out += seg(0xDB, b"\x00" + bytes([1] * 64))
    sof = struct.pack(">BHHB", 8, h, w, len(comps))
    for cid, hs, vs in comps:
        sof += bytes((cid, (hs << 4) | vs, 0))
    out += seg(0xC0, sof)
    bits_one = bytes([1] + [0] * 15)
    out += seg(0xC4, b"\x00" + bits_one + b"\x00")  # DC table 0: category 0
    out += seg(0xC4, b"\x10" + bits_one + b"\x00")  # AC table 0: EOB
    sos = bytes((len(comps),)) + b"".join(bytes((cid, 0x00)) for cid, _, _ in comps) + b"\x00\x3f\x00"
    out += seg(0xDA, sos)
    hmax = max(c[1] for c in comps)
    vmax = max(c[2] for c in comps)
    mcus = -(-w // (8 * hmax)) * -(-h // (8 * vmax))
    nbits = 2 * mcu_blocks * mcus
    data = bytearray(b"\x00" * (nbits // 8))
    if nbits % 8:
        data.append((1 << (8 - nbits % 8)) - 1)  # pad with ones
    return out + bytes(data) + b"\xff\xd9"


write("probe", "gray-8x8.jpg", jpeg(8, 8, [(1, 1, 1)], 1))
write("probe", "ycbcr420-16x16-orient6.jpg", jpeg(16, 16, [(1, 2, 2), (2, 1, 1), (3, 1, 1)], 6, exif_orientation=6))
write("probe", "ycbcr444-9x7.jpg", jpeg(9, 7, [(1, 1, 1), (2, 1, 1), (3, 1, 1)], 3))

# One real camera-style JPEG (EXIF orientation 6, 34 KB) from samples/, when present.
sample = os.path.join(HERE, "..", "samples", "chelsea-orient6.jpg")
if os.path.exists(sample) and os.path.getsize(sample) < 50_000:
    shutil.copyfile(sample, os.path.join(SEEDS, "probe", "chelsea-orient6.jpg"))


# ---------------------------------------------------------------- pipelines
for i, s in enumerate(
    [
        "thumbnail:1024,grayscale,blur:2,format:webp",
        "resize:800:600:cover:mitchell,sharpen:1:0.8,quality:80,progressive,format:jpeg",
        " resize:800:0 , greyscale,edges,rotate:-90,flip:h,progressive,compression:9",
        "frame:3,crop:10:10:400:300,aspect:16:9:north,smartcrop:300:300",
        "rotate:15:ffffff80,brightness:-20,contrast:1.2,gamma:2.2,invert,threshold:128,format:png,compression:0",
        "format:webp,lossless",
    ]
):
    write("pipeline", f"string-{i}.txt", s)
for i, v in enumerate(
    [
        {"ops": [{"op": "thumbnail", "size": 64}], "output": {"format": "webp", "quality": 70}},
        {
            "ops": [
                {"op": "resize", "width": 100, "height": 0, "fit": "inside", "filter": "catmullrom"},
                {"op": "rotate", "degrees": 33.5, "background": [1, 2, 3, 4]},
                {"op": "blur", "sigma": 0.5},
            ],
            "frame": 2,
        },
        {"ops": []},
    ]
):
    write("pipeline", f"json-{i}.json", json.dumps(v))


# ---------------------------------------------------------------- messages
job = {
    "schema": 1,
    "id": "j1",
    "batch": "b1",
    "input": {"bucket": "pixq", "key": "inputs/b1/a.jpg"},
    "input_digest": "sha256:00",
    "pipeline": {"ops": [{"op": "thumbnail", "size": 64}], "output": {"format": "png"}},
    "output": {"bucket": "pixq", "prefix": "outputs/"},
    "submitted_at_ms": 1,
}
write("message", "job.json", json.dumps(job))
bad = dict(job, pipeline={"ops": [{"op": "blur", "sigma": 1e10}]})
write("message", "job-bad-pipeline.json", json.dumps(bad))


def record(bucket, key, name="ObjectCreated:Put"):
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-30T01:02:03.000Z",
        "eventName": name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": 10, "eTag": '"abc"'},
        },
    }


write("message", "s3-event.json", json.dumps({"Records": [record("in", "inputs/photo+1.jpg"), record("in", "a%2F%2Fb.jpg")]}))
write("message", "s3-own-output.json", json.dumps({"Records": [record("out", "outputs/ab/x.jpg"), record("in", "x.jpg", "ObjectRemoved:Delete")]}))
write("message", "s3-test-event.json", json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-30T00:00:00Z", "Bucket": "in"}))
