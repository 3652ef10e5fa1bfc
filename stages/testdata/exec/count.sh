#!/bin/sh
# count.sh prints the length of its input: a per-record plugin run by path.
wc -c | tr -d ' '
