#!/bin/sh
# A plugin that writes 10 MB to stderr before answering each line with
# itself, then fails at the end of its input if asked to ($CHAOS_FAIL).
head -c 10485760 /dev/zero | tr '\0' e >&2
sed -u ''
[ -n "$CHAOS_FAIL" ] && { echo "stderr10m: the last words" >&2; exit 3; }
exit 0
