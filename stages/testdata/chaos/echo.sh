#!/bin/sh
# A well-behaved stream plugin that answers each line with itself. It
# records its pid in $CHAOS_PIDS, so that a test can kill it at random
# and check afterwards that it is gone. With $CHAOS_SLOW set it answers
# from a shell loop that pauses every 50 lines, so that a kill finds
# records in flight.
[ -n "$CHAOS_PIDS" ] && : > "$CHAOS_PIDS/echo.$$"
if [ -n "$CHAOS_SLOW" ]; then
	i=0
	while IFS= read -r line; do
		printf '%s\n' "$line"
		i=$((i + 1))
		[ $((i % 50)) -eq 0 ] && sleep 0.005
	done
	exit 0
fi
exec sed -u ''
