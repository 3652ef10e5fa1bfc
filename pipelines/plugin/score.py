"""score.py scores product reviews: an exec plugin for flowrun (mode:
stream, protocol: json).

flowrun writes each review as one line of JSON on stdin,

    {"id": 7, "record": "Great value, works well"}

and reads each answer as one line of JSON on stdout, in any order:

    {"id": 7, "records": ["{\"score\": 2, \"label\": \"positive\", ...}"]}

An answer may hold several records or none (the review is dropped); an
exception becomes {"id": 7, "error": "..."}, the error of that review
alone. Any other line on stdout, like a print() left in for debugging, and
everything on stderr, is the plugin's log: flowrun shows it on its stderr
prefixed with the stage's name.

serve() is the whole protocol: copy it, and replace score() with your own
model.
"""

import base64
import json
import re
import sys


def serve(handle):
    """Answers flowrun's json protocol: handle(text) returns the output records."""
    for line in sys.stdin:
        req = json.loads(line)
        try:
            rec = req["record"] if "record" in req else base64.b64decode(req["record_base64"]).decode(errors="replace")
            answer = {"id": req["id"], "records": list(handle(rec))}
        except Exception as e:
            answer = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


POSITIVE = {"good", "great", "excellent", "love", "loved", "works", "fast", "perfect", "value", "happy", "recommend", "solid"}
NEGATIVE = {"bad", "poor", "broken", "broke", "slow", "refund", "hate", "disappointed", "cheap", "useless", "returned", "noisy"}
NEGATORS = {"not", "never", "no"}

WORD = re.compile(r"[a-z']+")


def score(text):
    """Counts the positive words minus the negative ones, with "not" or
    "never" flipping the word after it."""
    total, flip = 0, 1
    for word in WORD.findall(text.lower()):
        if word in NEGATORS:
            flip = -1
            continue
        if word in POSITIVE:
            total += flip
        elif word in NEGATIVE:
            total -= flip
        flip = 1
    return total


def label(s):
    return "positive" if s > 0 else "negative" if s < 0 else "neutral"


def review(text):
    s = score(text)
    return [json.dumps({"score": s, "label": label(s), "text": text})]


if __name__ == "__main__":
    print(f"score.py: scoring with {len(POSITIVE)} positive and {len(NEGATIVE)} negative words", file=sys.stderr, flush=True)
    serve(review)
