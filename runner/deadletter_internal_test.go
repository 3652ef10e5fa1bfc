package runner

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fullDisk takes room bytes, then writes what fits and fails with ENOSPC.
type fullDisk struct {
	f    *os.File
	room int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	n := min(len(p), d.room)
	d.room -= n
	if _, err := d.f.Write(p[:n]); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, &os.PathError{Op: "write", Path: d.f.Name(), Err: syscall.ENOSPC}
	}
	return n, nil
}

// TestDeadLetterDiskFull: a dead-letter file on a full disk ended in half
// an entry, and the error named the file twice ("write dead letter to
// dl.jsonl: write dl.jsonl: no space left on device"). The half entry is
// cut off, and the error says how many of the dead letters the file
// holds, each whole.
func TestDeadLetterDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := newDeadLetters(f, "dl.jsonl")
	d.w = bufio.NewWriterSize(&fullDisk{f: f, room: 1000}, 256)
	var werr error
	n := 0
	for ; n < 100 && werr == nil; n++ {
		werr = d.write("s", uint64(n+1), 1, []byte(strings.Repeat("x", 40)), errors.New("bad"))
	}
	if werr == nil {
		werr = d.flush()
	}
	if !errors.Is(werr, syscall.ENOSPC) || strings.Count(werr.Error(), "dl.jsonl") != 1 {
		t.Fatalf("error %v, want ENOSPC naming the file once", werr)
	}
	got, _ := os.ReadFile(path)
	lines := strings.Count(string(got), "\n")
	if len(got) == 0 || got[len(got)-1] != '\n' || lines == 0 {
		t.Fatalf("the file ends in a torn entry or holds none: %q", got)
	}
	if want := "it holds the first " + strconv.Itoa(lines) + " of the run's " + strconv.Itoa(d.entries) + " dead letters"; !strings.Contains(werr.Error(), want) {
		t.Errorf("error %q, want %q", werr, want)
	}
	if err := d.flush(); err == nil || err.Error() != werr.Error() {
		t.Errorf("a flush after the failure: %v, want the same error", err)
	}
}
