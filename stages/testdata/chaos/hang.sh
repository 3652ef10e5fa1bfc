#!/bin/sh
# A plugin that never answers: it starts a grandchild that would outlive
# it (sleep 1000), records both pids in $CHAOS_PIDS and waits. Only killing
# its process group ends both.
sleep 1000 &
[ -n "$CHAOS_PIDS" ] && : > "$CHAOS_PIDS/hang.$$" && : > "$CHAOS_PIDS/sleep.$!"
wait
