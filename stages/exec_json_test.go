package stages_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/flowrun/flowrun/stages"
)

// execLogBuf is a stage's log, for the tests to read.
type execLogBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *execLogBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *execLogBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// execJSON makes an exec stage on the json protocol running answer.py in
// mode, its log going to the returned buffer.
func execJSON(t *testing.T, timeout time.Duration, mode string, with map[string]any) (stages.Stage, *execLogBuf) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 answer.py is not installed")
	}
	w := map[string]any{"command": []string{"python3", "-u", "answer.py"}, "protocol": "json", "env": map[string]string{"MODE": mode}}
	for k, v := range with {
		w[k] = v
	}
	log := &execLogBuf{}
	st, err := execTryNewLog(timeout, w, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = st.(io.Closer).Close() })
	return st, log
}

func TestExecJSONOptions(t *testing.T) {
	execNoLeak(t)
	_, err := execTryNew(0, map[string]any{"command": []string{"cat"}, "mode": "per-record", "protocol": "json"})
	var oe *stages.OptionError
	if !errors.As(err, &oe) || oe.Option != "protocol" || !strings.Contains(err.Error(), "mode: stream") {
		t.Fatalf("err = %v, want an *OptionError for protocol naming mode: stream", err)
	}
}

// TestExecJSON checks what the json protocol carries that lines cannot:
// any bytes, answers in any order, several records or none, an error for
// one record.
func TestExecJSON(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		inflight int
		recs     []string
		want     [][]string // nil: an error
		wantErr  []string   // per record: a substring of its error
	}{
		{"echo", "echo", 0, []string{"a", "", "ü ∑ \"quoted\" \\ \t"}, [][]string{{"a"}, {""}, {"ü ∑ \"quoted\" \\ \t"}}, nil},
		{"newlines and control bytes", "echo", 0, []string{"two\nlines", "\x00\x1b[2J\r"}, [][]string{{"two\nlines"}, {"\x00\x1b[2J\r"}}, nil},
		{"bytes that are not UTF-8", "echo", 0, []string{"\xff\xfe\x00", "ok", "\xc3"}, [][]string{{"\xff\xfe\x00"}, {"ok"}, {"\xc3"}}, nil},
		{"fan-out and filter", "fanout", 0, []string{"a,b,c", "", "d"}, [][]string{{"a", "b", "c"}, {}, {"d"}}, nil},
		{"JSON values as records", "objects", 0, []string{"hey"}, [][]string{{`{"n":3}`, `["hey"]`}}, nil},
		{"an error for one record", "echo", 0, []string{"a", "bad one", "b"}, [][]string{{"a"}, nil, {"b"}},
			[]string{"", "python3 answer.py failed this record: cannot handle bad one", ""}},
		{"out of order, inflight 4", "reverse", 4, execNumbered(400), execEach(execNumbered(400)), nil},
		{"out of order, inflight 256", "reverse", 0, execNumbered(1000), execEach(execNumbered(1000)), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			with := map[string]any{}
			if tt.inflight > 0 {
				with["inflight"] = tt.inflight
			}
			st, _ := execJSON(t, 10*time.Second, tt.mode, with)
			got, errs := execBatchAll(t, context.Background(), st, tt.recs, nil)
			for i := range tt.recs {
				if tt.want[i] == nil {
					if errs[i] == nil || !strings.Contains(errs[i].Error(), tt.wantErr[i]) {
						t.Fatalf("record %d: err = %v, want %q", i, errs[i], tt.wantErr[i])
					}
					if errors.Is(errs[i], stages.ErrLost) {
						t.Fatalf("record %d: a plugin's error for a record is not ErrLost", i)
					}
					continue
				}
				if errs[i] != nil || strings.Join(got[i], "|") != strings.Join(tt.want[i], "|") || len(got[i]) != len(tt.want[i]) {
					t.Fatalf("record %d: got %q, %v; want %q", i, got[i], errs[i], tt.want[i])
				}
			}
			if err := st.(io.Closer).Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func execNumbered(n int) []string {
	recs := make([]string, n)
	for i := range recs {
		recs[i] = "record " + strconv.Itoa(i)
	}
	return recs
}

func execEach(recs []string) [][]string {
	want := make([][]string, len(recs))
	for i, r := range recs {
		want[i] = []string{r}
	}
	return want
}

// TestExecJSONHostile checks that a plugin that breaks the json protocol
// on the record "x" gets a clear error on one record, never an answer on
// the wrong record and never a hang; that the records it did answer stand;
// and that a fresh plugin takes the next call.
func TestExecJSONHostile(t *testing.T) {
	recs := []string{"a", "x", "b", "c"}
	tests := []struct {
		name    string
		mode    string
		failed  int    // the record that fails
		wantErr string // in its error
		after   []bool // the records after it: true answered, false ErrLost
	}{
		{"answers an id it was never sent", "unknown", 1, "python3 answer.py answered id 1002, which it was never sent; killed it", []bool{false, false}},
		{"answers twice", "twice", 2, "python3 answer.py answered id 2 twice; killed it", []bool{false}},
		{"answers an id it answered before", "previous", 1, "python3 answer.py answered id 1 twice; killed it", []bool{false, false}},
		{"prints a line over max_output", "huge", 1, "python3 answer.py printed a line longer than max_output (1000 bytes); killed it", []bool{false, false}},
		{"an id that is not a number", "badid", 1, `python3 answer.py printed an answer whose id "one" is not one it was sent`, []bool{false, false}},
		{"records that are not a list", "malformed", 1, `python3 answer.py answered this record with a malformed answer: the answer's "records" is "not a list", not a list`, []bool{true, true}},
		{"never answers one record", "silent", 1, "no answer within 2s for this record", []bool{true, true}},
		{"logs on and on but never answers", "spam", 1, "no answer within 2s for this record", []bool{false, false}},
		{"exits 0 mid-stream", "exit0", 1, "python3 answer.py exited with status 0 before answering this record", []bool{false, false}},
		{"crashes", "crash", 1, "python3 answer.py exited with exit status 3 before answering this record; stderr: answer.py: cannot handle x", []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			// Only the silent plugin waits for the timeout; the others must
			// not run into it on a loaded machine.
			timeout := 20 * time.Second
			if tt.mode == "silent" || tt.mode == "spam" {
				timeout = 2 * time.Second
			}
			st, _ := execJSON(t, timeout, tt.mode, map[string]any{"max_output": 1000})
			got, errs := execBatchAll(t, context.Background(), st, recs, nil)
			for i := range recs {
				switch {
				case i < tt.failed, i > tt.failed && tt.after[i-tt.failed-1]:
					if errs[i] != nil || len(got[i]) != 1 || got[i][0] != recs[i] {
						t.Errorf("record %d: got %q, %v; want it answered", i, got[i], errs[i])
					}
				case i == tt.failed:
					if errs[i] == nil || !strings.Contains(errs[i].Error(), tt.wantErr) {
						t.Errorf("record %d: err = %v, want it to contain %q", i, errs[i], tt.wantErr)
					}
					if errors.Is(errs[i], stages.ErrLost) {
						t.Errorf("record %d: the record that failed must not be ErrLost", i)
					}
				default:
					if !errors.Is(errs[i], stages.ErrLost) {
						t.Errorf("record %d: err = %v, want ErrLost", i, errs[i])
					}
				}
			}
			// The plugin that answers "again" is a fresh process: on a
			// loaded machine (the race detector, python3's start-up) its
			// first answer may itself miss a 2 s timeout. A plugin that
			// never comes back misses every one.
			var out [][]byte
			var err error
			for try := 0; try < 5; try++ {
				out, err = st.Process(context.Background(), []byte("again"), nil)
				if err == nil || !strings.Contains(err.Error(), "no answer within") {
					break
				}
			}
			if err != nil || len(out) != 1 || string(out[0]) != "again" {
				t.Fatalf("after: got %q, %v; want the plugin to answer", execStrings(out), err)
			}
		})
	}
}

// TestExecJSONStray checks answers that come when no record waits for
// them: the next call fails its first record with the breach and a fresh
// plugin answers the rest, in lock-step as in a batch.
func TestExecJSONStray(t *testing.T) {
	execNoLeak(t)
	st, _ := execJSON(t, 2*time.Second, "twice", nil)
	if out, err := st.Process(context.Background(), []byte("x"), nil); err != nil || string(out[0]) != "x" {
		t.Fatalf("got %q, %v", execStrings(out), err)
	}
	// The second answer to "x" is on its way or there: the next record
	// fails with the breach, whichever it meets it in.
	_, err := st.Process(context.Background(), []byte("a"), nil)
	if err == nil || !strings.Contains(err.Error(), "answered id 1 twice") {
		t.Fatalf("err = %v, want the second answer reported", err)
	}
	got, errs := execBatch(t, context.Background(), st, []string{"b", "c"}, nil)
	if errs[0] != nil || errs[1] != nil || got[0] != "b" || got[1] != "c" {
		t.Fatalf("after the breach: got %q, %v", got, errs)
	}
}

// TestExecStreamLog checks that a stream plugin's log reaches the stage's
// log, each line prefixed with the stage's name and made harmless for a
// terminal: its stderr in either protocol, and with json the lines of
// stdout that are not answers.
func TestExecStreamLog(t *testing.T) {
	execNoLeak(t)
	st, log := execJSON(t, 10*time.Second, "log", nil)
	got, errs := execBatch(t, context.Background(), st, []string{"a", "b"}, nil)
	if errs[0] != nil || errs[1] != nil || got[0] != "a" || got[1] != "b" {
		t.Fatalf("got %q, %v", got, errs)
	}
	if err := st.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"[plugin] working on a\n", "[plugin] working on b\n",
		`[plugin] {"id": "log-7", "msg": "a JSON log line"}` + "\n",
		"[plugin] on stderr: a\n", "[plugin] on stderr: b\n",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log %q lacks %q", log, want)
		}
	}

	log = &execLogBuf{}
	// ESC, a C1 CSI in UTF-8 and a raw CSI byte (8-bit terminals) are
	// shown, not obeyed; so is a byte that is not UTF-8. Text stays.
	lines, err := execTryNewLog(10*time.Second, map[string]any{"command": []string{"sh", "-c", `printf 'oops\033[2J \302\2332J \2332J \377 é\n' >&2; exec sed -u s/^/x/`}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := lines.Process(context.Background(), []byte("y"), nil); err != nil || string(out[0]) != "xy" {
		t.Fatalf("got %q, %v", execStrings(out), err)
	}
	if err := lines.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if want := `[plugin] oops\x1b[2J \u009b2J \x9b2J \xff é` + "\n"; log.String() != want {
		t.Errorf("log = %q, want %q", log, want)
	}
}

// TestExecStreamLogRate checks that a plugin that floods its stderr shows
// a bounded part of it, and says how much it left out.
func TestExecStreamLogRate(t *testing.T) {
	execNoLeak(t)
	st, log := execJSON(t, 10*time.Second, "chatty", nil)
	if out, err := st.Process(context.Background(), []byte("r"), nil); err != nil || string(out[0]) != "r" {
		t.Fatalf("got %q, %v", execStrings(out), err)
	}
	if err := st.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	shown := strings.Count(log.String(), "[plugin] line ")
	var dropped int
	for _, l := range strings.Split(log.String(), "\n") {
		if rest, ok := strings.CutPrefix(l, "[plugin] ("); ok {
			n, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil || !strings.Contains(l, "lines of the plugin's log not shown: more than 20 a second") {
				t.Fatalf("bad note %q", l)
			}
			dropped += n
		}
	}
	// 100 at once and 20 a second: only a plugin that took 45s to write
	// its 2000 lines would show half of them.
	if shown >= 1000 || shown+dropped != 2000 {
		t.Fatalf("%d lines shown and %d said left out, want fewer than 1000 shown of 2000", shown, dropped)
	}
}

// TestExecStreamLines documents what protocol lines can and cannot see:
// a stray line shifts each later answer onto the record after it, unseen
// until a line comes when no record waits for one: at the end of the run,
// if not before.
func TestExecStreamLines(t *testing.T) {
	execNoLeak(t)
	st := execNew(t, 10*time.Second, map[string]any{"command": []string{"sh", "-c", `read l; echo "x$l"; echo stray; exec sed -u s/^/x/`}})
	got, errs := execBatch(t, context.Background(), st, []string{"a", "b", "c"}, nil)
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || got[0] != "xa" || got[1] != "stray" || got[2] != "xb" {
		t.Fatalf("got %q, %v; want the answers shifted (what lines cannot detect)", got, errs)
	}
	// The answer to "c" comes when nothing waits for it: Close sees it.
	err := st.(io.Closer).Close()
	if err == nil || !strings.Contains(err.Error(), "answered more lines than it was sent") {
		t.Fatalf("Close: %v, want the surplus seen", err)
	}
}

func TestExecJSONAnswer(t *testing.T) {
	tests := []struct {
		line    string
		id      int64
		records []string
		recErr  string // a.err, the record's own error
		err     string // a breach; "log" for errExecNotAnswer
	}{
		{`{"id":1,"records":["a"]}`, 1, []string{"a"}, "", ""},
		{` { "id" : 12 , "records" : [ "a" , "" ] } `, 12, []string{"a", ""}, "", ""},
		{`{"id": 3, "records": []}`, 3, nil, "", ""},
		{`{"records": ["z"], "id": 4}`, 4, []string{"z"}, "", ""},
		{`{"id": 5, "records": ["tab\there \"q\" \u00fc \ud83d\ude00"]}`, 5, []string{"tab\there \"q\" ü 😀"}, "", ""},
		{`{"id": 6, "records": [{"a": 1}, 2, null, true]}`, 6, []string{`{"a":1}`, "2", "null", "true"}, "", ""},
		{`{"id": 7, "records_base64": ["/w==", ""]}`, 7, []string{"\xff", ""}, "", ""},
		{`{"id": 8, "error": "no good"}`, 8, nil, "no good", ""},
		{`{"id": 9, "error": 3}`, 9, nil, "not a string", ""},
		{`{"id": 10, "records": "x"}`, 10, nil, "not a list", ""},
		{`{"id": 11, "records_base64": ["!"]}`, 11, nil, "not base64", ""},
		{`{"id": 12, "error": null}`, 12, nil, "no \"records\"", ""},
		{`{"id": 13, "records": null}`, 13, nil, "not a list", ""},
		{`{"id": 14, "records_base64": null}`, 14, nil, "not a list of strings", ""},
		{"\ufeff{\"id\": 15, \"records\": [\"a\"]}", 15, []string{"a"}, "", ""},
		{"\ufeff {\"id\": 16, \"records\": [\"\\u00e9\"]}", 16, []string{"é"}, "", ""},
		{`{"id": 0, "records": []}`, 0, nil, "", "is not one it was sent"},
		{`{"id": -1, "records": []}`, 0, nil, "", "is not one it was sent"},
		{`{"id": 1.5, "records": []}`, 0, nil, "", "is not one it was sent"},
		{`{"id": "7", "error": "x"}`, 0, nil, "", "is not one it was sent"},
		{`starting up`, 0, nil, "", "log"},
		{`{"id": 1, "msg": "a log line with an id"}`, 0, nil, "", "log"},
		{`{"level": "info"}`, 0, nil, "", "log"},
		{`[1, 2]`, 0, nil, "", "log"},
		{`{"id": 1, "records": ["a"]`, 0, nil, "", "log"},
		{``, 0, nil, "", "log"},
	}
	for _, tt := range tests {
		for _, fast := range []bool{true, false} {
			id, recs, recErr, err := stages.ParseExecAnswer([]byte(tt.line), fast)
			switch {
			case tt.err == "log":
				if err == nil || err.Error() != "not an answer" {
					t.Errorf("%s (fast %v): err = %v, want it taken for a log line", tt.line, fast, err)
				}
				continue
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("%s (fast %v): err = %v, want %q", tt.line, fast, err, tt.err)
				}
				continue
			case err != nil:
				t.Errorf("%s (fast %v): err = %v", tt.line, fast, err)
				continue
			}
			if id != tt.id || strings.Join(recs, "|") != strings.Join(tt.records, "|") || len(recs) != len(tt.records) {
				t.Errorf("%s (fast %v): got %d %q, want %d %q", tt.line, fast, id, recs, tt.id, tt.records)
			}
			if (recErr == nil) != (tt.recErr == "") || recErr != nil && !strings.Contains(recErr.Error(), tt.recErr) {
				t.Errorf("%s (fast %v): record error %v, want %q", tt.line, fast, recErr, tt.recErr)
			}
		}
	}
}

// FuzzExecJSON checks that a request carries any record exactly, and that
// the hand-written answer decoder agrees with encoding/json.
func FuzzExecJSON(f *testing.F) {
	for _, s := range []string{`{"id":1,"records":["a"]}`, `{"id": 12, "records": ["a", "b\"c"]}`, `{"id":3,"error":"x"}`, "\xff\x00\n", `{"id":1,"records":["é"]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := stages.AppendExecRequest(nil, 7, b)
		if bytes.IndexByte(req[:len(req)-1], '\n') >= 0 || req[len(req)-1] != '\n' {
			t.Fatalf("request %q is not one line", req)
		}
		var r struct {
			ID           int64   `json:"id"`
			Record       *string `json:"record"`
			RecordBase64 *string `json:"record_base64"`
		}
		if err := json.Unmarshal(req, &r); err != nil || r.ID != 7 {
			t.Fatalf("request %q: %v", req, err)
		}
		var got []byte
		switch {
		case r.Record != nil:
			got = []byte(*r.Record)
		case r.RecordBase64 != nil:
			got, _ = base64.StdEncoding.DecodeString(*r.RecordBase64)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("request %q carries %q, not %q", req, got, b)
		}

		if !utf8.Valid(b) {
			return // encoding/json makes invalid UTF-8 U+FFFD; the fast path keeps the bytes
		}
		id1, recs1, recErr1, err1 := stages.ParseExecAnswer(b, true)
		id2, recs2, recErr2, err2 := stages.ParseExecAnswer(b, false)
		if (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() ||
			id1 != id2 || strings.Join(recs1, "\x00") != strings.Join(recs2, "\x00") || len(recs1) != len(recs2) ||
			(recErr1 == nil) != (recErr2 == nil) {
			t.Fatalf("%q: fast %d %q %v %v, encoding/json %d %q %v %v", b, id1, recs1, recErr1, err1, id2, recs2, recErr2, err2)
		}
	})
}
