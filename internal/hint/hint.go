// Package hint finds the name a user most likely meant: the "did you
// mean" of spec keys, stage and command names, connector options and
// expression functions. It is one rule, so every message suggests alike.
package hint

import (
	"fmt"
	"strings"
)

// Nearest returns the candidate closest to s, case aside, when it is
// close enough to be a typo of s: at most a third of s's bytes edited (at
// least one edit allowed), and not s itself. "uper" finds "upper"; "foo"
// does not find "grep".
func Nearest(s string, candidates []string) (string, bool) {
	best, bestDist := "", -1
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := editDistance(ls, strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist < 0 || bestDist > max(1, len(s)/3) || s == best {
		return "", false
	}
	return best, true
}

// DidYouMean returns ` (did you mean "x"?)` for Nearest's candidate, or
// "" when there is none.
func DidYouMean(s string, candidates []string) string {
	if best, ok := Nearest(s, candidates); ok {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// editDistance is the optimal string alignment distance between a and b,
// in bytes: Levenshtein's, with swapping two neighbours as one edit.
func editDistance(a, b string) int {
	prevPrev := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prevPrev[j-2]+1) // a transposition: "fsat"
			}
		}
		prevPrev, prev, cur = prev, cur, prevPrev
	}
	return prev[len(b)]
}
