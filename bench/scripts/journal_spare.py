#!/usr/bin/env python3
# Measures what preparing a journal segment buys (docs/BENCHMARKS.md, "Journal spare segment").
# Usage: python3 bench/scripts/journal_spare.py DIR   (DIR on the file system to measure)
# fdatasync cost of 4 KiB journal-like appends: plain append vs fallocate'd vs zero-filled segment
import os, time, statistics, sys
d = sys.argv[1]
N = 3000; FRAME = 3072; SIZE = 64 << 20
def run(kind):
    p = os.path.join(d, f"seg.{kind}")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    if kind == "fallocate":
        os.posix_fallocate(fd, 0, SIZE); os.fsync(fd)
    elif kind == "zerofill":
        z = b"\0" * (1 << 20)
        for _ in range(SIZE >> 20): os.write(fd, z)
        os.fsync(fd)
    elif kind == "fallocate+zerofill":
        os.posix_fallocate(fd, 0, SIZE)
        z = b"\0" * (1 << 20)
        for _ in range(SIZE >> 20): os.write(fd, z)
        os.fsync(fd)
    prep = time.perf_counter() - t0
    buf = os.urandom(FRAME); lat = []; c0 = time.process_time()
    for i in range(N):
        t = time.perf_counter(); os.pwrite(fd, buf, i * FRAME); os.fdatasync(fd); lat.append(time.perf_counter() - t)
    cpu = (time.process_time() - c0) / N; os.close(fd); os.unlink(p)
    lat.sort()
    print(f"{kind:20s} prep {prep*1000:7.1f} ms  fdatasync p50 {lat[N//2]*1e6:7.0f} us  p99 {lat[int(N*.99)]*1e6:7.0f} us  mean {statistics.mean(lat)*1e6:7.0f} us  cpu/sync {cpu*1e6:5.0f} us")
for rep in range(3):
    for kind in ["append", "fallocate", "zerofill", "fallocate+zerofill"]:
        run(kind)
