package cli

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	stamped := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/flowrun/flowrun", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "c099dfa3b5f1"},
			{Key: "vcs.time", Value: "2026-12-01T08:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	goLine := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"stamped", stamped, "flowrun v1.2.3\nrevision c099dfa3b5f1 (2026-12-01T08:00:00Z), with uncommitted changes\n" + goLine},
		{"go build without VCS", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "flowrun (devel)\nrevision unknown (not built from a git checkout)\n" + goLine},
		{"no build info", nil, "flowrun (devel)\nrevision unknown (not built from a git checkout)\n" + goLine},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatVersion(tt.bi); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	if got := versionText(); !strings.HasPrefix(got, "flowrun ") || !strings.HasSuffix(got, goLine) {
		t.Errorf("versionText() = %q", got)
	}
}
