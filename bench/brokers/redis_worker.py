"""The seed's kind of Redis worker, for the benchmark: redis-py, one
message at a time on the reliable-queue pattern that flowrun's list
input uses (BLMOVE into a processing list, RPUSH the upper-cased result,
LREM the original once Redis replied), for COUNT messages."""
import sys

import redis

url, src, dst, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = redis.Redis.from_url(url)
processing = src + ":processing:py"
for _ in range(count):
    body = r.blmove(src, processing, 10, "LEFT", "RIGHT")
    if body is None:
        sys.exit("no message within 10s")
    r.rpush(dst, body.upper())
    r.lrem(processing, 1, body)
