#!/bin/sh
# hang.sh writes its pid to $PIDFILE and echoes lines, but on a line
# "hang" it sleeps in a child, so that a test can kill it mid-stream and
# check that the child dies with it.
echo $$ >"$PIDFILE"
while IFS= read -r line; do
	if [ "$line" = hang ]; then
		sleep 100 &
		echo $! >"$PIDFILE.child"
		wait
	fi
	printf '%s\n' "$line"
done
