package stages_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flowrun/stages"
)

func TestFileWrite(t *testing.T) {
	png := "\x89PNG\r\n\x1a\nbytes"
	blob := `{"name":"cat.png","url":"http://x/cat.png","data_base64":"` + base64.StdEncoding.EncodeToString([]byte(png)) + `"}`
	cases := []struct {
		name     string
		template string // "": the default
		rec      string
		wantPath string // relative to dir
		wantData string
		wantErr  string
	}{
		{name: "text by hash", rec: "hello", wantPath: "26c7827d889f6da3.txt", wantData: "hello"},
		{name: "binary by hash", rec: "\xff\xfe", wantPath: "", wantData: "\xff\xfe"},
		{name: "image by hash", rec: png, template: "{{hash}}{{ext}}", wantPath: "", wantData: png},
		{name: "blob by name", rec: blob, wantPath: "cat.png", wantData: png},
		{name: "blob without name", rec: `{"data_base64":"aGk="}`, wantPath: "", wantData: "hi"},
		{name: "object by field", template: "{{.id}}.json", rec: `{"id":12345678901234567890}`, wantPath: "12345678901234567890.json", wantData: `{"id":12345678901234567890}`},
		{name: "sub directory", template: "{{.kind}}/{{.id}}{{ext}}", rec: `{"kind":"a","id":1}`, wantPath: "a/1.json", wantData: `{"kind":"a","id":1}`},
		{name: "text dot", template: "line-{{.}}", rec: "x", wantPath: "line-x", wantData: "x"},
		{name: "parent", template: "../{{.}}", rec: "x", wantErr: "not a path inside dir"},
		{name: "absolute", template: "{{.}}", rec: "/tmp/x", wantErr: "not a path inside dir"},
		{name: "empty name", template: "{{.}}", rec: "", wantErr: "not a path inside dir"},
		{name: "through symlink out", template: "out/{{.}}", rec: "x", wantErr: "write out/x"},
		{name: "missing field", template: "{{.nope}}", rec: `{"id":1}`, wantErr: "nope"},
		{name: "bad base64", rec: `{"data_base64":"%%%"}`, wantErr: "data_base64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := t.TempDir(), t.TempDir()
			if err := os.Symlink(outside, filepath.Join(dir, "out")); err != nil {
				t.Fatal(err)
			}
			with := map[string]any{"dir": dir}
			if tc.template != "" {
				with["name_template"] = tc.template
			}
			got, err := libbRun(libbStage(t, "file.write", with), tc.rec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, stages.ErrPermanent) {
					t.Fatalf("error %v, want a permanent one containing %q", err, tc.wantErr)
				}
				if entries, _ := os.ReadDir(outside); len(entries) > 0 {
					t.Errorf("wrote outside dir: %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], dir+string(filepath.Separator)) {
				t.Fatalf("emitted %q, want one path in %s", got, dir)
			}
			if rel, _ := filepath.Rel(dir, got[0]); tc.wantPath != "" && rel != tc.wantPath {
				t.Errorf("wrote %s, want %s", rel, tc.wantPath)
			}
			data, err := os.ReadFile(got[0])
			if err != nil || string(data) != tc.wantData {
				t.Errorf("file holds %q (%v), want %q", data, err, tc.wantData)
			}
			files, _ := filepath.Glob(filepath.Join(dir, "*", ".*.tmp"))
			top, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
			if len(files)+len(top) > 0 {
				t.Errorf("temporary files left: %v %v", files, top)
			}
		})
	}
}

func TestFileWriteModeAndOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir") // made by the stage
	st := libbStage(t, "file.write", map[string]any{"dir": dir, "mode": "0600", "name_template": "f"})
	for _, rec := range []string{"first", "second"} {
		if _, err := libbRun(st, rec); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "f")); string(data) != "second" {
		t.Errorf("file holds %q, want the second record", data)
	}
}

func TestFileRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("alpha"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	libbRunCases(t, "file.read", []libbCase{
		{name: "absolute path", rec: filepath.Join(dir, "a.txt") + "\n", want: []string{"alpha"}},
		{name: "in dir", with: map[string]any{"dir": dir}, rec: "a.txt", want: []string{"alpha"}},
		{name: "at max", with: map[string]any{"max_size": 5}, rec: filepath.Join(dir, "a.txt"), want: []string{"alpha"}},
		{name: "over max", with: map[string]any{"max_size": 4}, rec: filepath.Join(dir, "a.txt"), wantErr: "more than max_size 4"},
		{name: "missing", rec: filepath.Join(dir, "nope.txt"), wantErr: "nope.txt"},
		{name: "directory", rec: filepath.Join(dir, "sub"), wantErr: "is a directory"},
		{name: "escapes dir", with: map[string]any{"dir": filepath.Join(dir, "sub")}, rec: "../a.txt", wantErr: "leads outside dir"},
		{name: "empty", rec: " ", wantErr: "names no file"},
	})
}

func TestFileOptionErrors(t *testing.T) {
	cases := []struct {
		stage, option string
		with          map[string]any
	}{
		{"file.write", "dir", map[string]any{"dir": ""}},
		{"file.write", "dir", map[string]any{}},
		{"file.write", "mode", map[string]any{"dir": "d", "mode": "rw-r--r--"}},
		{"file.write", "mode", map[string]any{"dir": "d", "mode": "01777"}},
		{"file.write", "name_template", map[string]any{"dir": "d", "name_template": "{{.a"}},
		{"file.write", "name_template", map[string]any{"dir": "d", "name_template": "{{nofunc}}"}},
		{"file.read", "max_size", map[string]any{"max_size": 0}},
	}
	for _, tc := range cases {
		t.Run(tc.stage+"/"+tc.option, func(t *testing.T) {
			_, err := libbNewStage(tc.stage, tc.with)
			var oe *stages.OptionError
			if !errors.As(err, &oe) || oe.Option != tc.option {
				t.Fatalf("error %v, want an *OptionError for %s", err, tc.option)
			}
		})
	}
}

// TestFileReadNotRegular checks that file.read refuses a named pipe at
// once, instead of waiting in open(2) for a writer that never comes, where
// no timeout and no signal could reach it; and a device, whose read may
// never end.
func TestFileReadNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	cases := []libbCase{
		{name: "fifo", rec: fifo, wantErr: "is a named pipe (FIFO), not a regular file"},
		{name: "fifo in dir", with: map[string]any{"dir": dir}, rec: "fifo", wantErr: "is a named pipe (FIFO), not a regular file"},
		{name: "device", rec: "/dev/zero", wantErr: "is a character device, not a regular file"},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		libbRunCases(t, "file.read", cases)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second): // a failsafe, not a measurement: on the old code open never returns
		os.WriteFile(fifo, nil, 0) // let the stuck open return, so the test ends
		t.Fatal("file.read of a FIFO did not return")
	}
}

// TestFileWriteNames checks that a name with a control character is the
// record's error (a newline would forge a second output record; so would
// U+2028 and U+2029 for a reader that splits lines as Unicode does, like
// Python's splitlines and JavaScript), and that
// names of up to 255 bytes, which the file system takes, are written.
func TestFileWriteNames(t *testing.T) {
	dir := t.TempDir()
	st := libbStage(t, "file.write", map[string]any{"dir": dir, "name_template": "{{.name}}"})
	for _, name := range []string{"a\nb", "tab\there", "esc\x1b[2J", "del\x7f", "c1\u0085", "ls\u2028", "ps\u2029"} {
		q, _ := json.Marshal(name)
		rec := `{"name":` + string(q) + `}`
		out, err := libbRun(st, rec)
		if err == nil || !errors.Is(err, stages.ErrPermanent) || !strings.Contains(err.Error(), "control character") {
			t.Errorf("name %q: emitted %q, error %v; want a permanent error about a control character", name, out, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("files written for refused names: %v", entries)
	}
	for _, n := range []int{200, 234, 245, 255} {
		name := strings.Repeat("n", n)
		out, err := libbRun(st, `{"name":"`+name+`"}`)
		if err != nil {
			t.Errorf("name of %d bytes: %v", n, err)
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil || len(out) != 1 {
			t.Errorf("name of %d bytes: %v, emitted %q", n, err, out)
		}
	}
}

// TestFileMessages: the errors of file.read and file.write name the record's
// path and say what is wrong in words, not in system calls: os.Root said
// "openat esc: path escapes from parent", and a full disk named
// file.write's temporary file.
func TestFileMessages(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "esc"))
	os.Symlink(outside, filepath.Join(dir, "lnk"))
	read := libbStage(t, "file.read", map[string]any{"dir": dir})
	write := libbStage(t, "file.write", map[string]any{"dir": dir, "name_template": "{{.name}}"})
	for _, tc := range []struct {
		st        stages.Stage
		rec, want string
	}{
		{read, "esc", "esc leads outside dir, through .. or a symbolic link"},
		{read, "lnk/secret", "lnk/secret leads outside dir"},
		{read, "missing", "open missing: no such file or directory"},
		{write, `{"name":"lnk/x"}`, "write lnk/x: lnk leads outside dir"},
		{write, `{"name":"` + strings.Repeat("n", 256) + `"}`, "write " + strings.Repeat("n", 256) + ": file name too long"},
	} {
		_, err := libbRun(tc.st, tc.rec)
		if err == nil || err.Error() != tc.want && !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, stages.ErrPermanent) {
			t.Errorf("%.40s: error %v, want a permanent one starting %q", tc.rec, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "openat") || strings.Contains(err.Error(), ".flowrun-")) {
			t.Errorf("%.40s: error %q names a system call or the temporary file", tc.rec, err)
		}
	}
}
