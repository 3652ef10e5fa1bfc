package stages

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flowrun/flowrun/internal/jsontext"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"unicode"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

func init() {
	Register(Spec{
		Name: "file.read",
		Doc: "Reads the file a record names and emits its bytes; with dir, paths are relative to dir and may not leave it. " +
			"Only regular files are read: a named pipe, a device or a socket is an error for its record, since reading one may never end.",
		Options: []Option{
			{Name: "dir", Type: String, Default: "", Doc: "the directory paths are relative to and confined to (relative to the pipeline file); empty: any path, relative to the working directory"},
			{Name: "max_size", Type: Int, Default: 64 << 20, Doc: "the largest file, in bytes; a larger one is an error for its record"},
		},
		Check: checkFileRead,
		New:   newFileReadStage,
	})
	Register(Spec{
		Name: "file.write",
		Doc: "Writes each record to a file under dir, atomically, and emits the file's path. " +
			"A blob record (a JSON object with data_base64, made by http.get emit: json) writes its decoded data.",
		Options: []Option{
			{Name: "dir", Type: String, Required: true, Doc: "the directory to write in (relative to the pipeline file), created if missing; no file is written outside it"},
			{Name: "name_template", Type: String, Default: "{{name}}", Doc: "the file's path under dir, a Go text/template: " +
				"{{.field}} is a field of a JSON object record, {{hash}} the 16 hex digits of the data's xxhash, {{ext}} an extension from the data (.png, .jpg, .gif, .json, .txt, .bin), " +
				"{{name}} the record's name field or else {{hash}}{{ext}}"},
			{Name: "mode", Type: String, Default: "0644", Doc: "the new files' permissions, in octal"},
			{Name: "sync", Type: Bool, Default: true, Doc: "fsync each file and its directory before emitting its path, so that a journal never counts a file that a power cut could leave empty; false is faster and as safe short of a crash of the machine"},
		},
		Check: func(c Config) error { _, err := newFileWriteStage(c, false); return err },
		New:   func(c Config) (Stage, error) { return newFileWriteStage(c, true) },
	})
}

// Blob records carry binary data and its name through a pipeline of byte
// records: {"name": "cat.jpg", "url": "…", "data_base64": "…"}. http.get
// makes them (emit: json), image.resize keeps them (renaming name for its
// output format) and file.write names its file after them. Base64 costs a
// third more bytes and about a gigabyte a second of encoding, which is
// small next to fetching or decoding an image; it keeps every record one
// self-describing JSON value that jq, pick or a dead-letter file can show.
const blobData = "data_base64"

// decodeBlob decodes rec when it is a JSON object: fields are its fields,
// numbers as json.Number so that names made from ids stay exact. data is the
// decoded data_base64 field when there is one (isBlob), otherwise nil. The
// data is decoded straight from the record's text, and left out of
// fields: a copy of it as a string would be a third more memory than the
// data itself, for every image in flight.
func decodeBlob(rec []byte) (fields map[string]any, data []byte, isBlob bool, err error) {
	if !isJSONObject(rec) {
		return nil, nil, false, nil
	}
	var encoded []byte // the data_base64 value, quotes included
	rest := make([]byte, 1, 64)
	rest[0] = '{'
	err = eachMember(rec, func(key []byte, escaped bool, member, value []byte) {
		name := string(key)
		if escaped {
			name, _ = jsontext.UnquoteKey(key)
		}
		if name == blobData {
			encoded = value
			return
		}
		if len(rest) > 1 {
			rest = append(rest, ',')
		}
		rest = append(rest, member...)
	})
	if err != nil {
		return nil, nil, false, err
	}
	d := json.NewDecoder(bytes.NewReader(append(rest, '}')))
	d.UseNumber()
	if err := d.Decode(&fields); err != nil {
		return nil, nil, false, Permanent(fmt.Errorf("decode JSON: %w", err))
	}
	if encoded == nil {
		return fields, nil, false, nil
	}
	if encoded[0] != '"' {
		return nil, nil, false, Permanent(fmt.Errorf("field %s is not a string", blobData))
	}
	text := encoded[1 : len(encoded)-1]
	if bytes.IndexByte(text, '\\') >= 0 { // an escaped slash, say: unquote first
		var s string
		if err := json.Unmarshal(encoded, &s); err != nil {
			return nil, nil, false, Permanent(fmt.Errorf("field %s: %w", blobData, err))
		}
		text = []byte(s)
	}
	data = make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(data, text)
	if err != nil {
		return nil, nil, false, Permanent(fmt.Errorf("field %s: %w", blobData, err))
	}
	return fields, data[:n], true, nil
}

// encodeBlob returns fields with data as their data_base64, as a JSON
// object with sorted keys. The data is encoded straight into the record,
// not into a string first.
func encodeBlob(fields map[string]any, data []byte) ([]byte, error) {
	delete(fields, blobData)
	before, after := map[string]any{}, map[string]any{}
	for k, v := range fields {
		if k < blobData {
			before[k] = v
		} else {
			after[k] = v
		}
	}
	head, err := encodeJSONObject(before)
	if err != nil {
		return nil, err
	}
	tail, err := encodeJSONObject(after)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(head)+len(tail)+base64.StdEncoding.EncodedLen(len(data))+len(blobData)+8)
	b = append(b, head[:len(head)-1]...) // without its }
	if len(before) > 0 {
		b = append(b, ',')
	}
	b = append(b, `"`+blobData+`":"`...)
	b = base64.StdEncoding.AppendEncode(b, data)
	b = append(b, '"')
	if len(after) > 0 {
		b = append(b, ',')
		b = append(b, tail[1:]...) // without its {
	} else {
		b = append(b, '}')
	}
	return b, nil
}

// encodeJSONObject encodes m with sorted keys, without HTML escaping.
func encodeJSONObject(m map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// fileRoot resolves the directory option against the pipeline's directory.
func fileRoot(c Config, option string) string {
	dir := c.String(option)
	if dir == "" || filepath.IsAbs(dir) || c.Dir == "" {
		return dir
	}
	return filepath.Join(c.Dir, dir)
}

// fileErr classifies an error of a file operation on a record's path:
// those that another attempt cannot fix are permanent.
func fileErr(err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrExist),
		errors.Is(err, fs.ErrInvalid), errors.Is(err, errPathEscapes()):
		return Permanent(fileErrText(err))
	case errors.As(err, &errno) && (errno == syscall.ENOTDIR || errno == syscall.EISDIR ||
		errno == syscall.ENAMETOOLONG || errno == syscall.ELOOP || errno == syscall.EINVAL):
		return Permanent(fileErrText(err))
	}
	return fileErrText(err)
}

// fileErrText rewrites the text of err, keeping what it wraps, for a person
// rather than for a reader of system calls: os.Root's "openat x: path
// escapes from parent" becomes "x leads outside dir, ..."; an operation
// named for its system call (openat, mkdirat, renameat) by its plain name;
// and the path of a read or a write, which the caller names already, or of
// file.write's temporary file, is left out.
func fileErrText(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		path := pe.Path
		if strings.HasPrefix(filepath.Base(path), ".flowrun-") {
			path = filepath.Dir(path) // the temporary file of file.write
		}
		switch {
		case errors.Is(pe.Err, errPathEscapes()):
			return &fileText{fmt.Sprintf("%s leads outside dir, through .. or a symbolic link", path), err}
		case pe.Op == "read" || pe.Op == "write" || path != pe.Path:
			return &fileText{pe.Err.Error(), err}
		}
		return &fileText{fmt.Sprintf("%s %s: %v", strings.TrimSuffix(pe.Op, "at"), path, pe.Err), err}
	case errors.As(err, &le):
		return &fileText{le.Err.Error(), err} // file.write's rename, whose target the caller names
	}
	return err
}

// fileText is an error with a text of its own, wrapping the original.
type fileText struct {
	text string
	err  error
}

func (e *fileText) Error() string { return e.text }
func (e *fileText) Unwrap() error { return e.err }

// errPathEscapes returns os.Root's error for a path that leaves the root;
// os does not export it, so it is learnt from a root the first time.
var errPathEscapes = sync.OnceValue(func() error {
	escapes := errors.New("path escapes from parent")
	root, err := os.OpenRoot(".")
	if err != nil {
		return escapes
	}
	defer root.Close()
	_, err = root.Stat("..")
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return escapes
})

func checkFileRead(c Config) error {
	if c.Int("max_size") < 1 {
		return OptionErrorf("max_size", "must be at least 1 byte, not %d", c.Int("max_size"))
	}
	return nil
}

type fileReadStage struct {
	root *os.Root // nil: any path
	max  int64
}

func newFileReadStage(c Config) (Stage, error) {
	if err := checkFileRead(c); err != nil {
		return nil, err
	}
	s := &fileReadStage{max: int64(c.Int("max_size"))}
	if dir := fileRoot(c, "dir"); dir != "" {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return nil, OptionErrorf("dir", "%v", err)
		}
		s.root = root
	}
	return s, nil
}

func (s *fileReadStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	name := strings.TrimSpace(string(rec))
	if name == "" {
		return out, Permanent(errors.New("record names no file"))
	}
	f, err := openRegular(s.root, name)
	if err != nil {
		return out, err
	}
	defer f.Close()
	data, err := readAtMost(f, s.max)
	if err != nil {
		return out, fmt.Errorf("read %s: %w", name, fileErr(err))
	}
	return append(out, data), nil
}

// openRegular opens the regular file name, in root unless root is nil. A
// named pipe, a device or a socket is refused: opening a FIFO waits for a
// writer, and reading one or a device may never end, in a call that no
// context or timeout can interrupt. O_NONBLOCK makes the open itself
// return at once; it changes nothing for a regular file.
func openRegular(root *os.Root, name string) (*os.File, error) {
	var f *os.File
	var err error
	if root != nil {
		f, err = root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	} else {
		f, err = os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	}
	if err != nil {
		return nil, fileErr(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, Permanent(fmt.Errorf("%s is %s, not a regular file", name, fileKind(fi.Mode())))
	}
	return f, nil
}

// fileKind names the kind of file that m describes, with its article.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// readAtMost reads r to its end, or fails with a permanent error when it
// holds more than max bytes. It never holds more than about max bytes
// while reading: the size of a file is known, and so is a body's with a
// Content-Length, and then one buffer of that size is read into; a stream
// of unknown length is read into chunks that double in size, together
// never more than max+1, and joined at the end. bytes.Buffer would double
// one buffer past max, holding up to 3×max with the garbage of the
// copies, which 8 workers on an endless body turned into 2 GB for a
// 64 MiB limit.
func readAtMost(r io.Reader, max int64) ([]byte, error) {
	size := int64(-1)
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	if size > max {
		return nil, Permanent(fmt.Errorf("%d bytes is more than max_size %d", size, max))
	}
	return readLimited(r, max, size, nil)
}

// errTooLarge is the error for more than max bytes; callers say of what.
type errTooLarge struct{ max int64 }

func (e errTooLarge) Error() string { return fmt.Sprintf("more than %d bytes", e.max) }

// readLimited is readAtMost for a reader whose length is likely size, or
// -1 when unknown; a size that is wrong costs only copies. A worker that
// reads again and again may pass its own spare: the chunks of a read that
// failed (an endless body, a gzip bomb) or were joined are kept there for
// its next read to fill, rather than left to the garbage collector, which
// lets the heap grow to twice what is live before it collects.
func readLimited(r io.Reader, max, size int64, spare *[][]byte) ([]byte, error) {
	var old [][]byte
	if spare != nil {
		old, *spare = *spare, nil
	}
	chunk := func(n int64) []byte {
		for len(old) > 0 {
			c := old[0]
			old = old[1:]
			if int64(cap(c)) >= n {
				return c[:0:n]
			}
		}
		return make([]byte, 0, n)
	}
	first := int64(4 << 10)
	if size >= 0 {
		first = size + 1 // +1: to see the end, or that the file grew
	}
	chunks := [][]byte{chunk(min(first, max+1))}
	keep := func() {
		if spare != nil {
			*spare = chunks
		}
	}
	total := int64(0)
	for {
		c := chunks[len(chunks)-1]
		if len(c) == cap(c) {
			c = chunk(min(2*int64(cap(c)), max+1-total)) // total <= max: at least 1
			chunks = append(chunks, c)
		}
		n, err := r.Read(c[len(c):cap(c)])
		chunks[len(chunks)-1] = c[:len(c)+n]
		total += int64(n)
		if total > max {
			keep()
			return nil, Permanent(errTooLarge{max})
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			keep()
			return nil, err
		}
	}
	if len(chunks) == 1 {
		return chunks[0], nil
	}
	data := make([]byte, 0, total)
	for _, c := range chunks {
		data = append(data, c...)
	}
	keep()
	return data, nil
}

type fileWriteStage struct {
	dir  string
	root *os.Root
	name *template.Template
	perm os.FileMode
	sync bool

	// The template's functions read the record at hand from here: each
	// worker has its own stage and template.
	data   []byte
	fields map[string]any
}

// newFileWriteStage checks c and, when open, makes dir and opens it.
func newFileWriteStage(c Config, open bool) (*fileWriteStage, error) {
	dir := fileRoot(c, "dir")
	if dir == "" {
		return nil, OptionErrorf("dir", "must name a directory")
	}
	perm, err := strconv.ParseUint(c.String("mode"), 8, 32)
	if err != nil || perm > 0o777 {
		return nil, OptionErrorf("mode", "%q is not an octal permission like 0644", c.String("mode"))
	}
	s := &fileWriteStage{dir: dir, perm: os.FileMode(perm), sync: c.Bool("sync")}
	if c.String("name_template") == "" {
		return nil, OptionErrorf("name_template", "is empty: a file needs a name")
	}
	s.name, err = template.New("name_template").
		Option("missingkey=error").
		Funcs(template.FuncMap{"hash": s.hash, "ext": s.ext, "name": s.blobName}).
		Parse(c.String("name_template"))
	if err != nil {
		return nil, &OptionError{Option: "name_template", Err: err}
	}
	if !open {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, OptionErrorf("dir", "%v", err)
	}
	if s.root, err = os.OpenRoot(dir); err != nil {
		return nil, OptionErrorf("dir", "%v", err)
	}
	return s, nil
}

func (s *fileWriteStage) hash() string {
	return fmt.Sprintf("%016x", xxhash.Sum64(s.data))
}

func (s *fileWriteStage) ext() string { return sniffExt(s.data, s.fields != nil) }

func (s *fileWriteStage) blobName() string {
	if n, ok := s.fields["name"].(string); ok && n != "" {
		return n
	}
	return s.hash() + s.ext()
}

// sniffExt names a file extension for data from its first bytes.
func sniffExt(data []byte, object bool) string {
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return ".png"
	case bytes.HasPrefix(data, []byte("\xff\xd8\xff")):
		return ".jpg"
	case bytes.HasPrefix(data, []byte("GIF8")):
		return ".gif"
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return ".webp"
	case object:
		return ".json"
	case utf8.Valid(data):
		return ".txt"
	}
	return ".bin"
}

func (s *fileWriteStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	fields, data, isBlob, err := decodeBlob(rec)
	if err != nil {
		return out, err
	}
	if !isBlob {
		data = rec
	}
	s.data, s.fields = data, fields
	defer func() { s.data, s.fields = nil, nil }()

	var name strings.Builder
	var dot any = string(rec)
	if fields != nil {
		dot = fields
	}
	if err := s.name.Execute(&name, dot); err != nil {
		return out, Permanent(err)
	}
	if i := strings.IndexFunc(name.String(), fileNameBreak); i >= 0 {
		// A newline in a path would forge a second output record.
		return out, Permanent(fmt.Errorf("name %q holds a control character or line separator (%U), which a file name must not", name.String(), []rune(name.String()[i:])[0]))
	}
	rel := filepath.Clean(name.String())
	if !filepath.IsLocal(rel) || rel == "." {
		return out, Permanent(fmt.Errorf("name %q is not a path inside dir", name.String()))
	}
	if err := s.write(rel, data); err != nil {
		return out, fmt.Errorf("write %s: %w", rel, fileErr(err))
	}
	return append(out, []byte(filepath.Join(s.dir, rel))), nil
}

// fileNameBreak reports whether r may not be in a file name that is
// emitted as a record: a control character, or U+2028 and U+2029, the line
// and paragraph separators, which Python's splitlines and JavaScript take
// for line ends.
func fileNameBreak(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// write writes data to a temporary file beside rel and renames it to rel,
// so that a reader, or a crash, never sees half a file; the root keeps
// every step inside dir, through symbolic links too. With sync, the file
// and then its directory are fsynced before write returns: once the path
// is emitted (and a journal counts the record), the file survives a power
// cut. The temporary name is short and fixed in length, so that any name
// the file system takes, up to its 255 bytes, can be written.
func (s *fileWriteStage) write(rel string, data []byte) error {
	parent := filepath.Dir(rel)
	if parent != "." {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	tmp := filepath.Join(parent, fmt.Sprintf(".flowrun-%016x.tmp", rand.Uint64()))
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, s.perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && s.sync {
		err = fileSync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, rel)
	}
	if err != nil {
		s.root.Remove(tmp)
		return err
	}
	if s.sync {
		return s.syncDir(parent)
	}
	return nil
}

// mkdirAll makes dir under the root, and with sync fsyncs the parent of
// each directory it makes, so that the new directories survive a crash
// with the files in them.
func (s *fileWriteStage) mkdirAll(dir string) error {
	if !s.sync {
		return s.root.MkdirAll(dir, 0o755)
	}
	if _, err := s.root.Stat(dir); err == nil {
		return nil
	}
	if up := filepath.Dir(dir); up != "." {
		if err := s.mkdirAll(up); err != nil {
			return err
		}
	}
	if err := s.root.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return s.syncDir(filepath.Dir(dir))
}

// syncDir fsyncs the directory dir under the root, which makes the names
// in it (a rename, a new file) durable.
func (s *fileWriteStage) syncDir(dir string) error {
	d, err := s.root.Open(dir)
	if err != nil {
		return err
	}
	err = fileSync(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// fileSync is (*os.File).Sync; the tests count its calls.
var fileSync = (*os.File).Sync

// Close releases the stage's directory.
func (s *fileWriteStage) Close() error { return s.root.Close() }

// Close releases the stage's directory, if it has one.
func (s *fileReadStage) Close() error {
	if s.root == nil {
		return nil
	}
	return s.root.Close()
}
