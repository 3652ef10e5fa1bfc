package cli

import (
	"os"
	"os/exec"
	"path/filepath"
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

// TestBuildIdentity: a clean build is known by its version and revision;
// a build of uncommitted changes, or of no known revision, also by its
// executable's hash, so that two of different code differ.
func TestBuildIdentity(t *testing.T) {
	build := func(modified string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "c099dfa3b5f1"}, {Key: "vcs.modified", Value: modified}}}
	}
	hash := func(h string) func() string { return func() string { return "sha256 " + h } }
	noHash := func() string { t.Error("a clean build's executable was hashed"); return "" }
	if got, want := buildIdentity(build("false"), noHash), "v1.2.3, revision c099dfa3b5f1"; got != want {
		t.Errorf("clean: %q, want %q", got, want)
	}
	a, b := buildIdentity(build("true"), hash("aaaa")), buildIdentity(build("true"), hash("bbbb"))
	if a == b || !strings.HasSuffix(a, ", with uncommitted changes, executable sha256 aaaa") {
		t.Errorf("two builds of uncommitted changes: %q and %q", a, b)
	}
	if got := buildIdentity(nil, hash("cccc")); got != "(devel), revision unknown (not built from a git checkout), executable sha256 cccc" {
		t.Errorf("no build info: %q", got)
	}
	if h := executableHash(); h == "" || strings.HasPrefix(h, "unknown") || h != executableHash() {
		t.Errorf("executableHash() = %q", h)
	}
}

// TestExecutableHashIsTheLinkers: an executable is named by the hash of
// its content that the Go linker wrote into it, as `go tool buildid`
// prints it, not by a SHA-256 of the whole file read before each run on
// a broker (tens of milliseconds of a core for flowrun's 58 MB); a file
// without one is hashed.
func TestExecutableHashIsTheLinkers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the linker's note is read from ELF executables")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Skipf("go tool buildid: %v", err)
	}
	id := strings.TrimSpace(string(out))
	want := "build " + id[strings.LastIndexByte(id, '/')+1:]
	if got := executableHash(); got != want {
		t.Errorf("executableHash() = %q, want %q (go tool buildid: %s)", got, want, id)
	}
	notELF := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if got := goBuildContentID(notELF); got != "" {
		t.Errorf("goBuildContentID of a script = %q, want none", got)
	}
}

func BenchmarkExecutableHash(b *testing.B) {
	for b.Loop() {
		executableHash()
	}
}
