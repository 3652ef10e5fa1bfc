"""A consumer from another program: a redis-py worker that BLPOPs COUNT
records from LIST (or reads them from STREAM with XRANGE) and prints each
on a line."""
import sys

import redis

url, kind, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = redis.Redis.from_url(url)
if kind == "list":
    for _ in range(count):
        item = r.blpop(key, timeout=10)
        if item is None:
            break
        print(item[1].decode(), flush=True)
else:
    for _, fields in r.xrange(key, count=count):
        print(fields[b"data"].decode(), flush=True)
