package runner

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"unicode/utf8"

	"github.com/flowrun/flowrun/connect/file"
)

// DeadLetter is one line of the dead-letter file: a record that exhausted
// its attempts, with where and why. Record holds the record when it is
// valid UTF-8; otherwise RecordBase64 holds its bytes, so that nothing is
// lost in JSON's replacement of invalid bytes.
type DeadLetter struct {
	Stage        string `json:"stage"`
	Error        string `json:"error"`
	Attempts     int    `json:"attempts"`
	Seq          uint64 `json:"seq"` // the input record's number, from 1
	Record       string `json:"record,omitempty"`
	RecordBase64 string `json:"record_base64,omitempty"`
	// Truncated says the record was longer than max_record_size and only
	// its start is kept: it cannot be re-run from here.
	Truncated bool `json:"truncated,omitempty"`
	// Status and Body are an HTTP error's status code and a short excerpt
	// of the body the server sent, from the error's Fields.
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
}

// Bytes returns the record.
func (d *DeadLetter) Bytes() []byte {
	if d.RecordBase64 != "" {
		b, _ := base64.StdEncoding.DecodeString(d.RecordBase64)
		return b
	}
	return []byte(d.Record)
}

// deadLetters writes dead letters; workers of every stage share it.
type deadLetters struct {
	mu   sync.Mutex
	w    *bufio.Writer
	name string
	err  error
	sum  *dlSum // a journal's, nil without one
	acks *acks  // a broker input's, told of each record dead-lettered
	// file, for a broker input, is fsynced by sync before the messages
	// dead-lettered are settled; unsynced says it has lines since.
	file     *os.File
	unsynced bool
	// collect, when set, takes the dead letters instead of a file: a
	// remote worker's, which sends them to the run to write.
	collect func(dl DeadLetter, rec []byte)
	// regular is the file under w when it is a regular one; entries
	// counts the dead letters given to w; broke is the error of the
	// first write that failed, said once the file is cut back to its
	// whole entries.
	regular *os.File
	entries int
	broke   error
}

func newDeadLetters(w io.Writer, name string) *deadLetters {
	return &deadLetters{w: bufio.NewWriter(w), name: name, regular: regularFile(w)}
}

// failed is the error of a write that failed (d.err, held under d.mu).
// A full disk leaves half an entry at the file's end: it is cut off,
// and the error says how many of the dead letters the file holds.
func (d *deadLetters) failed() error {
	if d.broke != nil {
		return d.broke
	}
	cause := d.err
	var pe *fs.PathError
	if errors.As(cause, &pe) {
		cause = pe.Err // the file is named once
	}
	d.broke = fmt.Errorf("write dead letter to %s: %w", d.name, cause)
	if d.regular != nil && file.CutTorn(d.regular) == nil {
		if n, err := countLines(d.regular.Name()); err == nil {
			d.broke = fmt.Errorf("write dead letter to %s: %w; it holds the first %d of the run's %d dead letters, each whole", d.name, cause, n, d.entries)
		}
	}
	return d.broke
}

// countLines counts the lines of the file at path.
func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, buf := 0, make([]byte, 64<<10)
	for {
		m, err := f.Read(buf)
		n += bytes.Count(buf[:m], []byte{'\n'})
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func (d *deadLetters) write(stage string, seq uint64, attempts int, rec []byte, cause error) error {
	dl := DeadLetter{Stage: stage, Error: cause.Error(), Attempts: attempts, Seq: seq}
	var fielded interface{ Fields() map[string]any }
	if errors.As(cause, &fielded) {
		f := fielded.Fields()
		dl.Status, _ = f["status"].(int)
		dl.Body, _ = f["body"].(string)
	}
	return d.writeEntry(dl, rec)
}

// writeEntry writes dl with rec as its record.
func (d *deadLetters) writeEntry(dl DeadLetter, rec []byte) error {
	if d == nil {
		return fmt.Errorf("no dead_letter file is set")
	}
	if d.collect != nil {
		d.collect(dl, rec)
		return nil
	}
	if utf8.Valid(rec) {
		dl.Record = string(rec)
	} else {
		dl.RecordBase64 = base64.StdEncoding.EncodeToString(rec)
	}
	line, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		d.entries++
		d.w.Write(line)
		d.err = d.w.WriteByte('\n')
		if d.err == nil && d.sum != nil {
			d.sum.add(dl.Seq, line)
		}
	}
	if d.err == nil {
		d.unsynced = true
		d.acks.deadLettered(dl.Seq)
	}
	if d.err != nil {
		return d.failed()
	}
	return nil
}

func (d *deadLetters) flush() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		d.err = d.w.Flush()
	}
	if d.err != nil {
		return d.failed()
	}
	return nil
}

// sync flushes and, when there is a file to and lines since the last
// time, fsyncs it.
func (d *deadLetters) sync() error {
	if d == nil {
		return nil
	}
	if err := d.flush(); err != nil || d.file == nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unsynced {
		if err := syncFile(d.file); err != nil {
			return fmt.Errorf("write dead letter to %s: %w", d.name, err)
		}
		d.unsynced = false
	}
	return nil
}
