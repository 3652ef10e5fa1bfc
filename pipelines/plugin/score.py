"""score.py scores product reviews: an exec plugin for flowrun (mode: stream).

It reads one review per line on stdin and answers each with exactly one
line of JSON on stdout, in the same order:

    {"score": 2, "label": "positive", "text": "Great value, works well"}

The score counts the positive words in the review minus the negative ones,
with "not" or "never" flipping the word after it. Replace the word lists,
or the whole of score(), with your own model: the protocol stays the same.

Run it with `python3 -u` (or flush after each answer, as below): a plugin
that buffers its output never answers, and flowrun reports it as stalled.
"""

import json
import re
import sys

POSITIVE = {"good", "great", "excellent", "love", "loved", "works", "fast", "perfect", "value", "happy", "recommend", "solid"}
NEGATIVE = {"bad", "poor", "broken", "broke", "slow", "refund", "hate", "disappointed", "cheap", "useless", "returned", "noisy"}
NEGATORS = {"not", "never", "no"}

WORD = re.compile(r"[a-z']+")


def score(text):
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
    if s > 0:
        return "positive"
    if s < 0:
        return "negative"
    return "neutral"


def main():
    for line in sys.stdin:
        text = line.rstrip("\n")
        s = score(text)
        # One line in, one line out: every answer is a single line, since
        # json.dumps escapes any newline inside a string.
        print(json.dumps({"score": s, "label": label(s), "text": text}), flush=True)


if __name__ == "__main__":
    main()
