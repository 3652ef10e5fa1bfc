"""The seed's kind of worker, for the benchmark: pika with prefetch 1,
consuming IN, upper-casing, publishing persistent messages to OUT and
acking each message, for COUNT messages."""
import sys

import pika

url, src, dst, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.queue_declare(queue=src, durable=True)
ch.queue_declare(queue=dst, durable=True)
ch.basic_qos(prefetch_count=1)
done = 0
for method, props, body in ch.consume(src):
    ch.basic_publish("", dst, body.upper(), pika.BasicProperties(delivery_mode=2))
    ch.basic_ack(method.delivery_tag)
    done += 1
    if done == count:
        break
ch.cancel()
conn.close()
