package stages

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFileWriteSyncs checks that file.write fsyncs the file and the
// directories whose names changed before it emits the path: the file, its
// directory after the rename, and the parents of directories it made.
func TestFileWriteSyncs(t *testing.T) {
	var synced []string
	defer func(f func(*os.File) error) { fileSync = f }(fileSync)
	fileSync = func(f *os.File) error {
		synced = append(synced, f.Name())
		return f.Sync()
	}
	for _, tc := range []struct{ sync bool }{{true}, {false}} {
		synced = nil
		dir := t.TempDir()
		spec, _ := Lookup("file.write")
		c, err := NewConfig(spec, "w", "", map[string]any{"dir": dir, "name_template": "sub/{{.}}", "sync": tc.sync})
		if err != nil {
			t.Fatal(err)
		}
		st, err := spec.New(c)
		if err != nil {
			t.Fatal(err)
		}
		out, err := st.Process(t.Context(), []byte("f"), nil)
		st.(interface{ Close() error }).Close()
		if err != nil || len(out) != 1 || string(out[0]) != filepath.Join(dir, "sub", "f") {
			t.Fatalf("sync %v: emitted %q, error %v", tc.sync, out, err)
		}
		// sync: the new directory's parent (dir), the temporary file, sub.
		if tc.sync && len(synced) != 3 || !tc.sync && len(synced) != 0 {
			t.Errorf("sync %v: fsynced %q", tc.sync, synced)
		}
	}
}
