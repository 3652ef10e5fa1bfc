# answer.py is a plugin on exec's json protocol for the tests. It echoes
# each record (bytes that are not UTF-8 as records_base64); $MODE picks what
# it does besides, and how it misbehaves on the record "x".
import base64
import json
import os
import sys

mode = os.environ.get("MODE", "echo")
held = []


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def echo(req):
    if "record_base64" in req:
        return {"id": req["id"], "records_base64": [req["record_base64"]]}
    return {"id": req["id"], "records": [req["record"]]}


for line in sys.stdin:
    req = json.loads(line)
    rec = req.get("record")
    if mode == "reverse":
        # Answers in groups of four, last first.
        held.append(req)
        if len(held) == 4:
            for r in reversed(held):
                send(echo(r))
            held = []
        continue
    if mode == "fanout":
        send({"id": req["id"], "records": [p for p in rec.split(",") if p]})
        continue
    if mode == "objects":
        send({"id": req["id"], "records": [{"n": len(rec)}, [rec]]})
        continue
    if mode == "log":
        print("working on", rec, flush=True)
        sys.stdout.write(json.dumps({"id": "log-7", "msg": "a JSON log line"}) + "\n")
        print("on stderr:", rec, file=sys.stderr, flush=True)
    if mode == "chatty":
        for i in range(2000):
            print("line", i, "of", rec, file=sys.stderr)
        sys.stderr.flush()
    if rec is not None and rec.startswith("bad"):
        send({"id": req["id"], "error": "cannot handle " + rec})
        continue
    if rec == "x":
        if mode == "unknown":
            send({"id": req["id"] + 1000, "records": ["?"]})
            continue
        if mode == "twice":
            send(echo(req))
            send(echo(req))
            continue
        if mode == "previous":
            send({"id": req["id"] - 1, "records": ["again"]})
            continue
        if mode == "huge":
            send({"id": req["id"], "records": ["y" * 3000000]})
            continue
        if mode == "badid":
            send({"id": "one", "records": ["?"]})
            continue
        if mode == "malformed":
            send({"id": req["id"], "records": "not a list"})
            continue
        if mode == "silent":
            continue
        if mode == "spam":
            import time
            while True:
                print("still thinking about x", flush=True)
                time.sleep(0.01)
        if mode == "exit0":
            sys.exit(0)
        if mode == "crash":
            print("answer.py: cannot handle x", file=sys.stderr, flush=True)
            sys.exit(3)
    send(echo(req))
