package table_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSort(t *testing.T) {
	tests := []struct {
		name string
		with map[string]any
		in   []string
		want []string
	}{
		{"bytewise", nil, []string{"b", "B", "a", "", "é", "ab", "a"}, []string{"", "B", "a", "a", "ab", "b", "é"}},
		{"reverse", map[string]any{"reverse": true}, []string{"b", "a", "c"}, []string{"c", "b", "a"}},
		{"unique", map[string]any{"unique": true}, []string{"b", "a", "b", "a"}, []string{"a", "b"}},
		{"numeric, non-numbers first in input order", map[string]any{"numeric": true}, []string{"10", "x", "9", "-1.5", " 2", "a", "1e2"},
			[]string{"x", "a", "-1.5", " 2", "9", "10", "1e2"}},
		{"numeric stable", map[string]any{"numeric": true}, []string{"1.0", "1", "01", "0"}, []string{"0", "1.0", "1", "01"}},
		{"by a field, stable", map[string]any{"by": []string{"k"}}, []string{`{"k":2,"i":1}`, `{"k":1,"i":2}`, `{"k":2,"i":3}`, `{"k":1,"i":4}`},
			[]string{`{"k":1,"i":2}`, `{"k":1,"i":4}`, `{"k":2,"i":1}`, `{"k":2,"i":3}`}},
		{"by jq's order of kinds", map[string]any{"by": []string{"k"}},
			[]string{`{"k":"b"}`, `{"k":[1]}`, `{"k":10}`, `{"k":true}`, `{"k":{"a":1}}`, `{}`, `{"k":false}`, `{"k":"a\u0000b"}`, `{"k":2}`, `{"k":"a"}`},
			[]string{`{}`, `{"k":false}`, `{"k":true}`, `{"k":2}`, `{"k":10}`, `{"k":"a"}`, `{"k":"a\u0000b"}`, `{"k":"b"}`, `{"k":[1]}`, `{"k":{"a":1}}`}},
		{"by two fields, reverse stable", map[string]any{"by": []string{"a", "b"}, "reverse": true},
			[]string{`{"a":1,"b":"x","i":1}`, `{"a":2,"b":"x"}`, `{"a":1,"b":"y"}`, `{"a":1,"b":"x","i":2}`},
			[]string{`{"a":2,"b":"x"}`, `{"a":1,"b":"y"}`, `{"a":1,"b":"x","i":1}`, `{"a":1,"b":"x","i":2}`}},
		{"by numeric strings", map[string]any{"by": []string{"n"}, "numeric": true}, []string{`{"n":"10"}`, `{"n":"9"}`, `{"n":8}`},
			[]string{`{"n":8}`, `{"n":"9"}`, `{"n":"10"}`}},
		{"unique by field keeps the first", map[string]any{"by": []string{"k"}, "unique": true}, []string{`{"k":1,"i":1}`, `{"k":0}`, `{"k":1,"i":2}`},
			[]string{`{"k":0}`, `{"k":1,"i":1}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runStage(t, newStage(t, "sort", tt.with), tt.in...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
	if err := processErr(newStage(t, "sort", map[string]any{"by": []string{"k"}}), `nope`); err == nil || !isPermanent(err) {
		t.Errorf("a record that is not JSON: %v", err)
	}
}

func TestSortOptions(t *testing.T) {
	tests := []struct {
		with string
		want string
	}{
		{`{max_memory: 10}`, `p.yaml:4:24: option max_memory: is 10 bytes; it must be at least 1MiB`},
		{`{max_memory: lots}`, `p.yaml:4:24: option max_memory: "lots" is not a size`},
		{`{temp_dir: /no/such/dir}`, `p.yaml:4:22: option temp_dir: /no/such/dir is not a directory`},
		{`{by: [""]}`, `p.yaml:4:16: option by: a field name is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.with, func(t *testing.T) {
			_, stderr, code := runPipeline(t, "input: {format: jsonl}\nstages:\n  - use: sort\n    with: "+tt.with+"\n", "")
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

// genLines makes n lines of mixed bytes: short and long, repeated,
// numbers, non-ASCII, tabs.
func genLines(n int, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 2))
	parts := []string{"alpha", "Beta", "gamma", "é", "ß", "\t", " ", "0", "9", "-", "~", "zz"}
	var b strings.Builder
	for range n {
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "%d", r.IntN(2000)-1000)
		case 1:
			fmt.Fprintf(&b, "%.3f", r.Float64()*1000-500)
		default:
			for k := r.IntN(6); k >= 0; k-- {
				b.WriteString(parts[r.IntN(len(parts))])
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// TestSortReference checks sort against LC_ALL=C sort(1) and jq's
// sort_by, in memory and spilled through many runs.
func TestSortReference(t *testing.T) {
	lines := genLines(60000, 3)
	nums := genNumbers(40000, 4)
	recs := genRecords(30000, 5)
	tests := []struct {
		name, with, input string
		ref               []string
	}{
		{"bytewise", `{}`, lines, []string{"sort"}},
		{"bytewise spilled", `{max_memory: 1MiB}`, lines, []string{"sort"}},
		{"reverse unique spilled", `{max_memory: 1MiB, reverse: true, unique: true}`, lines, []string{"sort", "-r", "-u"}},
		{"numeric stable spilled", `{max_memory: 1MiB, numeric: true}`, nums, []string{"sort", "-s", "-g"}},
		{"numeric reverse", `{numeric: true, reverse: true}`, nums, []string{"sort", "-s", "-g", "-r"}},
		{"numeric exact past float64", `{max_memory: 1MiB, numeric: true}`, genBigNumbers(30000, 6), []string{"sort", "-s", "-n"}},
		{"by fields spilled", `{by: [k, v], max_memory: 1MiB}`, recs, []string{"jq", "-s", "-c", "sort_by(.k, .v)[]"}},
		{"by fields reverse", `{by: [g, name], reverse: true}`, recs, []string{"jq", "-s", "-c", "to_entries | sort_by(.value.g, .value.name, -.key) | reverse | .[].value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			format := "lines"
			if tt.ref[0] == "jq" {
				format = "jsonl"
			}
			out, stderr, code := runPipeline(t, fmt.Sprintf("input: {format: %s}\noutput: {format: %s}\nstages:\n  - use: sort\n    with: %s\n", format, format, tt.with), tt.input)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			want := tool(t, tt.input, tt.ref[0], tt.ref[1:]...)
			if format == "jsonl" {
				want = compactJSONLines(t, want)
			}
			if out != want {
				t.Errorf("differs from %s: %s", strings.Join(tt.ref, " "), firstDiff(out, want))
			}
		})
	}
}

// genNumbers makes lines that sort -g and sort's numeric read alike:
// plain numbers, with duplicates of different text.
func genNumbers(n int, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 3))
	var b strings.Builder
	for range n {
		switch v := r.IntN(500) - 250; r.IntN(3) {
		case 0:
			fmt.Fprintf(&b, "%d\n", v)
		case 1:
			fmt.Fprintf(&b, "%d.0\n", v)
		default:
			fmt.Fprintf(&b, "%.2f\n", float64(v)+r.Float64())
		}
	}
	return b.String()
}

// genBigNumbers makes numbers that a float64 cannot tell apart
// (9007199254740992 and …993, 20-digit integers, long fractions), in the
// syntax sort -n reads: digits, a minus, a point, leading zeros.
func genBigNumbers(n int, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 5))
	var b strings.Builder
	for range n {
		sign := ""
		if r.IntN(2) == 0 {
			sign = "-"
		}
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "%s9007199254740%03d\n", sign, r.IntN(20))
		case 1:
			fmt.Fprintf(&b, "%s1234567890123456789%d\n", sign, r.IntN(10))
		case 2:
			fmt.Fprintf(&b, "%s0.1000000000000000%03d\n", sign, r.IntN(1000))
		default:
			fmt.Fprintf(&b, "%s%s%d.%d\n", sign, strings.Repeat("0", r.IntN(3)), r.IntN(100), r.IntN(100))
		}
	}
	return b.String()
}

// compactJSONLines re-encodes jq's output as flowrun writes JSON records:
// the records' own text, which for generated records is encoding/json's.
func compactJSONLines(t *testing.T, s string) string {
	t.Helper()
	return s
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d: %q, reference %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines, reference %d", len(al), len(bl))
}

// TestSortOrderedDrain sorts through spilled runs in an ordered run with
// four workers after the sort: the pieces of the merge must reach the
// output whole and in order.
func TestSortOrderedDrain(t *testing.T) {
	lines := genLines(50000, 6)
	out, stderr, code := runPipeline(t, `
ordered: true
stages:
  - use: sort
    with: {max_memory: 1MiB}
  - use: trim
    workers: 4
    buffer: 8
`, lines)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := tool(t, lines, "sort")
	var trimmed strings.Builder
	for _, l := range strings.SplitAfter(want, "\n") {
		if l != "" {
			trimmed.WriteString(strings.TrimSpace(l) + "\n")
		}
	}
	if out != trimmed.String() {
		t.Errorf("ordered drain: %s", firstDiff(out, trimmed.String()))
	}
}

var binOnce struct {
	path string
	err  error
}

// flowrunBinary builds the CLI once for the tests that watch a process.
func flowrunBinary(t *testing.T) string {
	t.Helper()
	if binOnce.path == "" && binOnce.err == nil {
		dir, err := os.MkdirTemp("", "flowrun-table-test")
		if err == nil {
			binOnce.path = filepath.Join(dir, "flowrun")
			cmd := exec.Command("go", "build", "-o", binOnce.path, "github.com/flowrun/flowrun")
			cmd.Stderr = os.Stderr
			err = cmd.Run()
		}
		binOnce.err = err
	}
	if binOnce.err != nil {
		t.Fatal(binOnce.err)
	}
	return binOnce.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binOnce.path != "" {
		os.RemoveAll(filepath.Dir(binOnce.path))
	}
	os.Exit(code)
}

// writeBig writes about size bytes of lines to a file.
func writeBig(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "big.txt")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(7, 7))
	for n := 0; n < size; {
		k, _ := fmt.Fprintf(w, "%016x line %d\n", r.Uint64(), n)
		n += k
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// peakRSS runs the binary and returns its peak resident memory in bytes:
// the high-water mark of /proc/PID/status, read until it exits. (The
// rusage of a child would count the test process's own memory, which the
// child shares until it execs.)
func peakRSS(t *testing.T, stdout io.Writer, env []string, args ...string) int64 {
	t.Helper()
	cmd := exec.Command(flowrunBinary(t), args...)
	cmd.Stdout = stdout
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var peak int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, stderr.String())
			}
			return peak
		case <-time.After(2 * time.Millisecond):
		}
		data, err := os.ReadFile(status)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				var n int64
				fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), &n)
				peak = max(peak, n<<10)
			}
		}
	}
}

// TestSortMemory sorts files four and eight times max_memory and checks
// that the peak RSS does not grow with the input (the records spill to
// disk), and that the output is sorted and whole.
func TestSortMemory(t *testing.T) {
	const mem = 8 << 20
	dir := t.TempDir()
	sorted := filepath.Join(dir, "p.yaml")
	os.WriteFile(sorted, []byte("stages:\n  - use: sort\n    with: {max_memory: 8MiB}\n"), 0o644)
	plain := filepath.Join(dir, "plain.yaml")
	os.WriteFile(plain, []byte("stages:\n  - use: trim\n"), 0o644)
	env := []string{"TMPDIR=" + dir}
	var rss [2]int64
	for i, size := range []int{4 * mem, 8 * mem} {
		big := writeBig(t, size)
		base := peakRSS(t, io.Discard, env, "run", "-q", "--progress", "none", "-i", big, plain)
		out, err := os.Create(filepath.Join(dir, "out.txt"))
		if err != nil {
			t.Fatal(err)
		}
		rss[i] = peakRSS(t, out, env, "run", "-q", "--progress", "none", "-i", big, sorted)
		out.Close()
		t.Logf("peak RSS %d MiB sorting %d MiB with max_memory %d MiB; %d MiB without the sort", rss[i]>>20, size>>20, mem>>20, base>>20)
		// In memory, the records and their entries alone would be twice
		// the file, and the collector's headroom triples that.
		if rss[i] > base+int64(size) {
			t.Errorf("peak RSS %d MiB sorting %d MiB: the sort did not bound its memory", rss[i]>>20, size>>20)
		}
		ref := exec.Command(needTool(t, "sort"), "-o", filepath.Join(dir, "want.txt"), big)
		ref.Env = append(os.Environ(), "LC_ALL=C")
		if err := ref.Run(); err != nil {
			t.Fatal(err)
		}
		if err := exec.Command("cmp", "-s", filepath.Join(dir, "out.txt"), filepath.Join(dir, "want.txt")).Run(); err != nil {
			t.Errorf("output differs from sort(1): %v", err)
		}
	}
	// Held in memory, twice the input would add at least twice the 32 MiB
	// it grew by (records and their entries); spilled, the peak moves only
	// with the collector's timing, which a loaded machine stretches (a
	// fifth of the peak was exceeded under load).
	if grew := rss[1] - rss[0]; grew > 4*mem {
		t.Errorf("peak RSS grew with the input: %d MiB for twice the input, against %d MiB", rss[1]>>20, rss[0]>>20)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "flowrun-sort-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestSortInterrupt stops a sort with SIGINT and another with SIGKILL
// while it spills an endless input: no temporary file is left behind.
func TestSortInterrupt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "p.yaml")
			os.WriteFile(p, []byte("stages:\n  - use: sort\n    with: {max_memory: 1MiB}\n"), 0o644)
			cmd := exec.Command(flowrunBinary(t), "run", "-q", "--progress", "none", p)
			cmd.Env = append(os.Environ(), "TMPDIR="+dir)
			cmd.Stdout = io.Discard
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				line := []byte(strings.Repeat("x", 60) + "\n")
				for {
					if _, err := stdin.Write(line); err != nil {
						return
					}
				}
			}()
			// Wait until the sort has spilled a few runs: deleted files
			// it holds open.
			deadline := time.Now().Add(20 * time.Second)
			for spilled(cmd.Process.Pid, dir) < 3 {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatal("the sort did not spill")
				}
				time.Sleep(20 * time.Millisecond)
			}
			cmd.Process.Signal(sig)
			err = cmd.Wait()
			stdin.Close()
			<-done
			if code := cmd.ProcessState.ExitCode(); sig == syscall.SIGINT && code != 130 {
				t.Errorf("exit %d after SIGINT (%v), want 130", code, err)
			}
			left, _ := os.ReadDir(dir)
			for _, e := range left {
				if e.Name() != "p.yaml" {
					t.Errorf("left behind after %v: %s", sig, e.Name())
				}
			}
		})
	}
}

// spilled counts the deleted files in dir that process pid holds open.
func spilled(pid int, dir string) int {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, dir+"/") && strings.HasSuffix(target, "(deleted)") {
			n++
		}
	}
	return n
}

// TestSortJournalKilledInMerge kills a journaled sort with SIGKILL while
// it writes its merge (each record slowed by a sleep after it) and
// resumes: the output must be sort(1)'s. The merge's pieces claim no
// input record until the last, so no journal entry may count their bytes
// (one did: the resumed run sorted the whole input again after them).
func TestSortJournalKilledInMerge(t *testing.T) {
	dir := t.TempDir()
	in, out, jnl := filepath.Join(dir, "in.txt"), filepath.Join(dir, "out.txt"), filepath.Join(dir, "j.jnl")
	lines := genLines(6000, 8)
	os.WriteFile(in, []byte(lines), 0o644)
	p := filepath.Join(dir, "p.yaml")
	os.WriteFile(p, []byte("input: {format: lines}\noutput: {format: lines}\nstages:\n  - use: sort\n  - use: sleep\n    with: {duration: 300us}\n"), 0o644)
	args := []string{"run", "-q", "--progress", "none", "-i", in, "-o", out, "--journal", jnl, p}
	cmd := exec.Command(flowrunBinary(t), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once the merge has written some records and the journal has
	// had time for an entry (every 200ms), well before the end.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := os.Stat(out)
		if err == nil && st.Size() > int64(len(lines)/10) {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no output in 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	if st, _ := os.Stat(out); st.Size() >= int64(len(lines)) {
		t.Skip("the run finished before the kill")
	}
	resume := exec.Command(flowrunBinary(t), append(args, "--resume")...)
	if msg, err := resume.CombinedOutput(); err != nil {
		t.Fatalf("resume: %v\n%s", err, msg)
	}
	got, _ := os.ReadFile(out)
	if want := tool(t, lines, "sort"); string(got) != want {
		t.Errorf("resumed after a kill in the merge: %s", firstDiff(string(got), want))
	}
}
