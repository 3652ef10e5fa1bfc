#!/bin/sh
# crash.sh echoes lines, and on the line after the $CRASH_AFTER-th it
# complains on stderr and exits with status 3 without answering.
n=0
while IFS= read -r line; do
	n=$((n + 1))
	if [ "$n" -gt "$CRASH_AFTER" ]; then
		echo "crash.sh: cannot handle $line" >&2
		exit 3
	fi
	printf '%s\n' "$line"
done
