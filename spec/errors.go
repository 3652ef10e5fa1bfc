package spec

import (
	"sort"
	"strings"
)

// Error is one problem in a pipeline, at the place it was found.
//
// A problem that comes from an Options.Set override rather than from the
// file is placed at Pos{File: "--set", Line: i + 1, Col: 1}, i being the
// override's index in Options.Set, and its Msg starts with the override's
// text, so that the CLI prints "--set stages.x.workers=0: ...": the flag,
// not a made-up file.
type Error struct {
	Pos Pos
	Msg string
}

func (e Error) Error() string {
	if e.Pos.File == setFile {
		return setFile + " " + e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Errors is every problem Parse found in a pipeline, sorted by position:
// the file's problems first, then those of the --set overrides.
type Errors []Error

// Error joins the problems, one per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i].Pos, es[j].Pos
		if sa, sb := a.File == setFile, b.File == setFile; sa != sb {
			return sb
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}
