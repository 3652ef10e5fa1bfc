package spec

import "github.com/flowrun/flowrun/internal/hint"

// DidYouMean returns ` (did you mean "x"?)` for the candidate closest to
// s, or "" when none is close enough to be a likely typo. The CLI uses it
// for command and stage names, as validation does for keys.
func DidYouMean(s string, candidates []string) string { return hint.DidYouMean(s, candidates) }
