package file_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/codec"
	"github.com/flowrun/flowrun/connect/file"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSourceGlob reads a glob's files in lexical order through the
// registry, each record a message named by its file and line, to io.EOF.
func TestSourceGlob(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "b.jsonl"), "{\"n\":3}\n")
	write(t, filepath.Join(dir, "a.jsonl"), "\xef\xbb\xbf{\"n\":1}\n\n{\"n\":2}")
	ctx := context.Background()
	src, _, err := connect.OpenSource(ctx, "file://"+filepath.Join(dir, "*.jsonl")+"?format=jsonl", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []string
	for {
		msgs, err := src.Receive(ctx, make([]connect.Message, 0, 2))
		for _, m := range msgs {
			got = append(got, string(m.Data)+" "+filepath.Base(m.ID))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Settle(ctx, msgs, connect.Ack); err != nil {
			t.Fatal(err)
		}
	}
	want := `{"n":1} a.jsonl:1|{"n":2} a.jsonl:3|{"n":3} b.jsonl:1`
	if strings.Join(got, "|") != want {
		t.Errorf("got %s, want %s", strings.Join(got, "|"), want)
	}
}

// TestSourceBadRecord: a record that does not decode ends the read with
// an error that names its file and line.
func TestSourceBadRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.jsonl")
	write(t, path, "{\"n\":1}\nnot json\n")
	ctx := context.Background()
	src, _, err := connect.OpenSource(ctx, "file://"+path+"?format=jsonl", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = src.Receive(ctx, make([]connect.Message, 0, 10))
	if want := "input " + path + " line 2: not valid JSON"; err == nil || err.Error() != want {
		t.Errorf("err %v, want %s", err, want)
	}
}

// TestSink writes JSON objects as CSV under the first one's header, and
// refuses a record CSV cannot hold.
func TestSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	ctx := context.Background()
	snk, _, err := connect.OpenSink(ctx, "file://"+path+"?format=csv&delimiter=%3B", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer snk.Close()
	if err := snk.Write(ctx, []connect.Message{{Data: []byte(`{"a":1,"b":"x y"}`)}, {Data: []byte(`{"a":2,"b":"z"}`)}}); err != nil {
		t.Fatal(err)
	}
	if err := snk.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if want := "a;b\n1;x y\n2;z\n"; string(data) != want {
		t.Errorf("wrote %q, want %q", data, want)
	}
	if err := snk.Write(ctx, []connect.Message{{Data: []byte(`[1]`)}}); err == nil || !strings.Contains(err.Error(), "csv output needs JSON objects") {
		t.Errorf("a record CSV cannot hold: %v", err)
	}
}

// TestOptions: the spec's options are checked against each other, as
// for a broker.
func TestOptions(t *testing.T) {
	tests := []struct {
		url  string
		d    connect.Direction
		want string // "" for none
	}{
		{"file:///x?format=json&select=.items[]", connect.In, ""},
		{"file:///x?format=json", connect.Out, `file option "format": json is an input format; write jsonl`},
		{"file:///x?select=.a", connect.In, `file option "select": applies to format json, not lines`},
		{"file:///x?format=jsonl&delimiter=%3B", connect.In, `file option "delimiter": applies to format csv or tsv, not jsonl`},
		{"file:///x?format=csv&delimiter=ab", connect.In, `file option "delimiter": must be one character other than a quote or a line break, not "ab"`},
		{"file:///x?max_record_size=12XB", connect.In, `file option "max_record_size": "12XB" is not a size (like 65536, 64KiB, 16MiB, 1GiB)`},
		{"file:///x?formt=csv", connect.In, `file option "formt": no such option (did you mean "format"?)`},
	}
	for _, tt := range tests {
		_, err := connect.Parse(tt.url, nil, tt.d)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%s: %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestPath(t *testing.T) {
	tests := []struct{ in, path, err string }{
		{"file:///data/a%20b.csv", "/data/a b.csv", ""},
		{"file://localhost/data/x", "/data/x", ""},
		{"file://host/data/x", "", "a file URL names a local file (file:///PATH), not one on host"},
		{"file:///x?format=csv", "", "not in its URL"},
		{"file://", "", "the URL names no file"},
		{"file:///data/x#1", "", "a file URL has no fragment"},
		{"file:///data/x%231", "/data/x#1", ""},
		{"file:///data/x%00", "", `"/data/x\x00": a file name cannot hold a NUL byte`}, // was the system's "invalid argument"
		{"file:///tmp%2Fx", "", "a file name cannot hold a / (%2F)"},                   // was read as /tmp/x
		{"file:///tmp%2fx", "", "a file name cannot hold a / (%2F)"},
	}
	for _, tt := range tests {
		path, isFile, err := file.Path(tt.in)
		if !isFile || path != tt.path || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Path(%q) = %q, %t, %v; want %q, error with %q", tt.in, path, isFile, err, tt.path, tt.err)
		}
	}
	if _, isFile, _ := file.Path("data/x.csv"); isFile {
		t.Error("a plain path is taken for a file URL")
	}
	if _, _, err := file.Expand(filepath.Join(t.TempDir(), "*.none")); err == nil || !strings.Contains(err.Error(), "no file matches") {
		t.Errorf("a glob that matches nothing: %v", err)
	}
}

// TestSourceReusedBuffer receives into the slice the last Receive
// returned, as the contract allows (appended to buf[:0]): no message
// comes twice, and none past cap(buf). The source appended to buf, so
// each call handed on the last call's messages again.
func TestSourceReusedBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.txt")
	write(t, path, "a\nb\nc\nd\ne\n")
	ctx := context.Background()
	src, _, err := connect.OpenSource(ctx, "file://"+path, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []string
	msgs := make([]connect.Message, 0, 2)
	for {
		msgs, err = src.Receive(ctx, msgs)
		if len(msgs) > 2 {
			t.Fatalf("%d messages for a buffer of capacity 2", len(msgs))
		}
		got = append(got, bodies(msgs)...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(got, "") != "abcde" {
		t.Errorf("received %q, want each of a…e once", got)
	}
}

// TestSourceBadRecordEnds: after a record that does not decode, the read
// has ended: Receive says so again, and never hands on the records after
// it as if none were missing (those read with it were dropped, and the
// next Receive went on past them).
func TestSourceBadRecordEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.jsonl")
	write(t, path, "1\n2\nnot json\n3\n4\n")
	ctx := context.Background()
	src, _, err := connect.OpenSource(ctx, "file://"+path+"?format=jsonl", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []string
	failed := 0
	for i := 0; i < 10 && failed < 3; i++ {
		msgs, err := src.Receive(ctx, make([]connect.Message, 0, 10))
		got = append(got, bodies(msgs)...)
		switch {
		case err != nil && strings.Contains(err.Error(), "line 3: not valid JSON"):
			failed++
		case failed > 0 || err != nil:
			t.Fatalf("Receive %d: %v after %q; want the bad record's error", i+1, err, got)
		}
	}
	if strings.Join(got, ",") != "1,2" {
		t.Errorf("received %q, want the records before the bad one", got)
	}
}

// TestHostRefused: a file URL on another host is refused by the registry
// too, as from: and -i refuse it, not read as the local path.
func TestHostRefused(t *testing.T) {
	for _, d := range []connect.Direction{connect.In, connect.Out} {
		_, err := connect.Parse("file://otherhost/etc/hostname", nil, d)
		if err == nil || !strings.Contains(err.Error(), "not one on otherhost") {
			t.Errorf("%s: file://otherhost/etc/hostname: %v", d, err)
		}
	}
	if _, err := connect.Parse("file:///etc/hostname#x", nil, connect.In); err == nil || !strings.Contains(err.Error(), "no fragment") {
		t.Errorf("file:///etc/hostname#x: %v", err)
	}
	if _, err := connect.Parse("file://localhost/etc/hostname", nil, connect.In); err != nil {
		t.Errorf("file://localhost/: %v", err)
	}
}

func bodies(ms []connect.Message) []string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m.Data))
	}
	return s
}

// TestPlainPathsAreFiles: a path, a glob (whose ? is no URL query) and -
// open the file connector through the registry, as file:// URLs do.
func TestPlainPathsAreFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a1.txt"), "one\n")
	write(t, filepath.Join(dir, "a2.txt"), "two\n")
	for _, from := range []string{filepath.Join(dir, "a?.txt"), filepath.Join(dir, "a*.txt"), filepath.Join(dir, "a1.txt"), "-"} {
		p, err := connect.Parse(from, map[string]string{"format": "lines"}, connect.In)
		if err != nil {
			t.Fatalf("%s: %v", from, err)
		}
		if p.Spec.Name != "file" || p.URL.Path != from {
			t.Errorf("%s: connector %s, path %q", from, p.Spec.Name, p.URL.Path)
		}
	}
	src, _, err := connect.OpenSource(context.Background(), filepath.Join(dir, "a?.txt"), nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fs, ok := src.(connect.FileSource)
	if !ok {
		t.Fatalf("%T is no connect.FileSource", src)
	}
	if n := len(fs.Files()); n != 2 || fs.Size() != 8 {
		t.Errorf("%d files of %d bytes, want 2 of 8", n, fs.Size())
	}
}

// TestReceiveRecords: a FileSource goes on past a record that does not
// decode, ends each file with nil and the last with io.EOF, and counts
// the bytes its records span across the files; the journal hashes what
// Wrap sees of each file, and a nil Stdin is an empty input.
func TestReceiveRecords(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.jsonl"), "{\"n\":1}\nnot json\n{\"n\":2}\n")
	write(t, filepath.Join(dir, "b.jsonl"), "{\"n\":3}\n")
	var wrapped int
	src, err := file.NewSource(file.SourceConfig{
		From:    filepath.Join(dir, "*.jsonl"),
		Options: codec.Options{Format: "jsonl", MaxRecordSize: 1 << 20},
		Wrap:    func(r io.Reader) io.Reader { wrapped++; return r },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []string
	var ends []int64
	for {
		recs, err := src.ReceiveRecords(10, nil)
		for _, r := range recs {
			s := string(r.Data)
			if r.Err != nil {
				s = "error line " + strconv.FormatInt(r.Line, 10)
			}
			got = append(got, s)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, src.Consumed())
	}
	want := `{"n":1}|error line 2|{"n":2}|{"n":3}`
	if strings.Join(got, "|") != want {
		t.Errorf("got %s, want %s", strings.Join(got, "|"), want)
	}
	if last := ends[len(ends)-1]; last != 33 || src.Read() != 33 || wrapped != 2 {
		t.Errorf("consumed %v, read %d, %d files wrapped; want 33, 33, 2", ends, src.Read(), wrapped)
	}
	stdin, err := file.NewSource(file.SourceConfig{From: "-"})
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := stdin.ReceiveRecords(10, nil); len(recs) != 0 || err != nil {
		t.Errorf("empty stdin: %d records, %v", len(recs), err)
	}
	if _, err := stdin.ReceiveRecords(10, nil); err != io.EOF || stdin.Size() != -1 {
		t.Errorf("empty stdin: %v, size %d; want io.EOF, -1", err, stdin.Size())
	}
}

// TestFileSink: a record the format cannot hold fails alone, WriteOut
// writes what Add gathered and counts it, and a reader that went away is
// ErrClosed, not a write error in the pipe's words.
func TestFileSink(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := file.NewSink(file.SinkConfig{W: w, Name: "stdout", Format: "csv"})
	if err := s.Add([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Add([]byte(`not an object`)); err == nil {
		t.Error("csv took a record that is no JSON object")
	}
	if err := s.WriteOut(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if got := string(buf[:n]); got != "a\n1\n" || s.Written() != 4 || s.Full() {
		t.Errorf("wrote %q (%d bytes counted)", got, s.Written())
	}
	r.Close()
	s.Add([]byte(`{"a":2}`))
	if err := s.WriteOut(); err != file.ErrClosed {
		t.Errorf("write to a closed pipe: %v, want ErrClosed", err)
	}
	w.Close()
}

// fullDisk writes the first room bytes it is given to f and then fails
// as a full disk does: a short write and ENOSPC.
type fullDisk struct {
	f    *os.File
	room int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if len(p) <= d.room {
		d.room -= len(p)
		return d.f.Write(p)
	}
	n, _ := d.f.Write(p[:d.room])
	d.room = 0
	return n, syscall.ENOSPC
}

// A write the disk cuts short leaves no part of a record in the file:
// the records of earlier writes stay, whole, and the error says why.
func TestSinkShortWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := file.NewSink(file.SinkConfig{W: &fullDisk{f: f, room: 20}, File: f, Name: path, Format: "jsonl"})
	s.Add([]byte(`{"a":1}`))
	if err := s.WriteOut(); err != nil {
		t.Fatal(err)
	}
	s.Add([]byte(`{"a":2}`))
	s.Add([]byte(`{"a":3}`))
	if err := s.WriteOut(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("short write: %v, want ENOSPC", err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "{\"a\":1}\n" || s.Written() != 8 {
		t.Errorf("file holds %q (%d bytes counted), want only the whole first record", got, s.Written())
	}
}

// TestWritableLocked: a file one run writes is refused to another while
// the first holds it, existing or made by the first (a --resume started
// while the run it resumes lived, stopped with Ctrl-Z, mixed their
// records in the output), and is free once the first lets it go. A
// device, like /dev/null, is never locked.
func TestWritableLocked(t *testing.T) {
	dir := t.TempDir()
	for _, exists := range []bool{true, false} {
		path := filepath.Join(dir, fmt.Sprintf("out-%v.txt", exists))
		if exists {
			if err := os.WriteFile(path, []byte("kept\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		first, err := file.Probe(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := first.Open(file.Keep)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := file.Probe(path); err == nil || !strings.Contains(err.Error(), "another flowrun is writing it") {
			t.Errorf("exists %v: a second writer of a held file: %v", exists, err)
		}
		f.Close()
		second, err := file.Probe(path)
		if err != nil {
			t.Errorf("exists %v: the file let go is still refused: %v", exists, err)
		} else {
			second.Close()
		}
	}
	a, err := file.Probe(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := file.Probe(os.DevNull)
	if err != nil {
		t.Errorf("a device is locked: %v", err)
	} else {
		b.Close()
	}
}
