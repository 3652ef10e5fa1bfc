# shout.py answers each line with the line upper-cased and an exclamation
# mark: a stream plugin in the shape of pipelines/plugin/score.py.
import sys

for line in sys.stdin:
    print(line.rstrip("\n").upper() + "!", flush=True)
