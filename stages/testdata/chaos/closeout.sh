#!/bin/sh
# A plugin that answers the first line, then closes its stdout and keeps
# reading (and ignoring) its input.
[ -n "$CHAOS_PIDS" ] && : > "$CHAOS_PIDS/closeout.$$"
IFS= read -r line && printf '%s\n' "$line"
exec 1>&-
exec cat >/dev/null
