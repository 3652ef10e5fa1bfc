"""A consumer from another program: the seed's kind of worker (pika,
prefetch 1, an ack per message). It reads COUNT messages from QUEUE and
prints each body on a line."""
import sys

import pika

url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.queue_declare(queue=queue, durable=True)
ch.basic_qos(prefetch_count=1)
got = 0
for method, props, body in ch.consume(queue, inactivity_timeout=10):
    if method is None:
        break
    print(body.decode(), "persistent" if props.delivery_mode == 2 else "transient", flush=True)
    ch.basic_ack(method.delivery_tag)
    got += 1
    if got == count:
        break
ch.cancel()
conn.close()
