package cli_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// journalRun runs flowrun with --journal --resume, kills it with SIGKILL
// after a random delay, and again, until a run finishes; it returns how
// many runs it killed.
func journalRun(t *testing.T, maxKills int, args ...string) int {
	t.Helper()
	kills := 0
	for {
		cmd := exec.Command(flowrunBin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		delay := time.Duration(20+rand.IntN(200)) * time.Millisecond
		if kills >= maxKills {
			delay = time.Minute
		}
		select {
		case err := <-done:
			if code := cmd.ProcessState.ExitCode(); code != 0 && code != 3 {
				t.Fatalf("run %d: %v exit %d\n%s", kills+1, err, code, stderr.String())
			}
			return kills
		case <-time.After(delay):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			kills++
		}
	}
}

func TestJournalKillResume(t *testing.T) {
	dir := t.TempDir()
	var in strings.Builder
	for i := 1; i <= 30000; i++ {
		fmt.Fprintf(&in, "record %d %s\n", i, strings.Repeat("x", i%50))
	}
	input := writeFile(t, dir, "in.txt", in.String())
	tests := []struct {
		name, yaml string
		sorted     bool // compare as multisets
	}{
		{"ordered", "ordered: true\nstages: [{use: sleep, workers: 8, with: {duration: 50us, jitter: 100us}}, {use: upper}]\n", false},
		{"unordered", "stages: [{use: sleep, workers: 8, with: {duration: 50us, jitter: 100us}}, {use: upper, workers: 2}]\n", true},
		{"fan-out into a holding stage", "ordered: true\nstages: [{use: replace, with: {pattern: ' ', replacement: ','}}, {use: split, with: {sep: ','}}, {use: batch, with: {size: 3, max_wait: 0s}}, {use: sleep, workers: 4, with: {duration: 20us, jitter: 100us}}]\n", false},
		{"dead letters", "dead_letter: " + filepath.Join(dir, "dl-%s.jsonl") + "\nordered: true\nstages:\n" +
			"  - {use: sleep, workers: 8, with: {duration: 50us, jitter: 100us}}\n" +
			"  - {use: grep, with: {pattern: '7 x'}, on_error: skip}\n" +
			"  - {name: even, use: json.validate, on_error: dead-letter}\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, tt.name+".yaml", strings.ReplaceAll(tt.yaml, "%s", "killed"))
			ref := writeFile(t, dir, tt.name+"-ref.yaml", strings.ReplaceAll(tt.yaml, "%s", "ref"))
			want, err := exec.Command(flowrunBin, "run", "-q", "-i", input, ref).Output()
			if err != nil && !strings.Contains(err.Error(), "exit status 3") {
				t.Fatal(err)
			}
			out := filepath.Join(dir, tt.name+".out")
			journal := filepath.Join(dir, tt.name+".journal")
			kills := journalRun(t, 12, "run", "-q", "--progress", "none", "--journal", journal, "--resume", "-i", input, "-o", out, p)
			t.Logf("%d kill -9 and resume cycles", kills)
			if kills == 0 {
				t.Fatal("no run was killed: the test proved nothing")
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if tt.sorted {
				got, want = sortLines(got), sortLines(want)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("output after %d kills differs from an uninterrupted run (%d bytes vs %d)", kills, len(got), len(want))
			}
			if tt.name == "dead letters" {
				a, _ := os.ReadFile(filepath.Join(dir, "dl-killed.jsonl"))
				b, _ := os.ReadFile(filepath.Join(dir, "dl-ref.jsonl"))
				if len(b) == 0 || !bytes.Equal(sortLines(a), sortLines(b)) {
					t.Errorf("dead letters differ: %d lines vs %d", bytes.Count(a, []byte("\n")), bytes.Count(b, []byte("\n")))
				}
			}
			var entry struct{ Done bool }
			data, _ := os.ReadFile(journal)
			if json.Unmarshal(data, &entry); !entry.Done {
				t.Errorf("journal not marked done: %s", data)
			}
		})
	}
}

func sortLines(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	slices.Sort(lines)
	return []byte(strings.Join(lines, "\n"))
}

func TestJournalNeedsFiles(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	_, errs, code := runCLI(t, "x\n", "run", "--journal", filepath.Join(dir, "j"), p)
	if code != 2 || !strings.Contains(errs, "--journal needs an input file") {
		t.Errorf("exit %d: %s", code, errs)
	}
	_, errs, code = runCLI(t, "", "run", "--resume", p)
	if code != 2 || !strings.Contains(errs, "--resume needs --journal") {
		t.Errorf("exit %d: %s", code, errs)
	}
	in := writeFile(t, dir, "in.txt", "a\n")
	other := writeFile(t, dir, "other.yaml", "stages: [{use: lower}]\n")
	j := filepath.Join(dir, "j.journal")
	if _, errs, code = runCLI(t, "", "run", "-q", "--journal", j, "-i", in, "-o", filepath.Join(dir, "o"), p); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	_, errs, code = runCLI(t, "", "run", "-q", "--journal", j, "--resume", "-i", in, "-o", filepath.Join(dir, "o"), other)
	if code != 2 || !strings.Contains(errs, `journal is of pipeline "p", not "other"`) {
		t.Errorf("resuming another pipeline: exit %d: %s", code, errs)
	}
}

func TestResumeFailed(t *testing.T) {
	dir := t.TempDir()
	// The plugin fails records containing "bad" while the file broken
	// exists: a flaky dependency, fixed between the runs.
	broken := writeFile(t, dir, "broken", "")
	writeFile(t, dir, "plugin.sh", `while IFS= read -r line; do
  case "$line" in *BAD*) [ -e broken ] && { echo "down: $line" >&2; exit 1; } ;; esac
  echo "ok:$line"
done
`)
	p := writeFile(t, dir, "p.yaml", `dead_letter: `+filepath.Join(dir, "dl.jsonl")+`
ordered: true
stages:
  - {use: upper}
  - name: call
    use: exec
    with: {command: [sh, plugin.sh], mode: per-record}
    on_error: dead-letter
`)
	out := filepath.Join(dir, "out.txt")
	_, errs, code := runCLI(t, "a\nbad 1\nb\nbad 2\n", "run", "-q", "-o", out, p)
	if code != 3 {
		t.Fatalf("first run: exit %d, want 3: %s", code, errs)
	}
	os.Remove(broken)
	_, errs, code = runCLI(t, "", "run", "-q", "--resume-failed", "-o", out, p)
	if code != 0 {
		t.Fatalf("re-run: exit %d, want 0: %s", code, errs)
	}
	got, _ := os.ReadFile(out)
	if want := "ok:A\nok:B\nok:BAD 1\nok:BAD 2\n"; string(got) != want {
		t.Errorf("output %q, want %q", got, want)
	}
	dl, _ := os.ReadFile(filepath.Join(dir, "dl.jsonl"))
	if len(dl) != 0 {
		t.Errorf("dead letters left: %s", dl)
	}
	if _, err := os.Stat(filepath.Join(dir, "dl.jsonl.retrying")); err == nil {
		t.Error("the set-aside dead letters were not removed")
	}
}

// TestResumeCSVKeepsOneHeader resumes a CSV or TSV output from a journal
// entry in the middle of the file, in each output dialect: the header
// must not be written again (TSV's was), and the columns must continue
// the file's, read in its delimiter (a ";" CSV's header was read as one
// column) or, with no header row, be the first record's again (the first
// row of data was taken for the header): the output byte for byte the
// uninterrupted run's. A journal entry from before the first row
// (seq 0, no bytes) with the header and rows written after it: the
// header goes with what is cut, so it is written again (it was read from
// the bytes cut and taken as already there).
func TestResumeCSVKeepsOneHeader(t *testing.T) {
	tests := []struct{ name, format, dialect string }{
		{"csv", "csv", ""},
		{"csv delimiter", "csv", `, csv: {delimiter: ";"}`},
		{"csv no header", "csv", ", csv: {header: false}"},
		{"tsv", "tsv", ""},
		{"tsv delimiter", "tsv", `, csv: {delimiter: ":"}`}, // one the data lacks: TSV cannot escape it
		{"tsv no header", "tsv", ", csv: {header: false}"},
	}
	for _, tt := range tests {
		for _, seq := range []int{0, 100} {
			t.Run(fmt.Sprintf("%s after %d", tt.name, seq), func(t *testing.T) {
				dir := t.TempDir()
				var in strings.Builder
				in.WriteString("name,n\n")
				for i := 1; i <= 500; i++ {
					fmt.Fprintf(&in, "\"r%d, \\\"\"x\"\"\t;|\",%d\n", i, i)
				}
				input := writeFile(t, dir, "in.csv", in.String())
				p := writeFile(t, dir, "p.yaml", "input: {format: csv}\noutput: {format: "+tt.format+tt.dialect+"}\nstages: [{use: sleep, with: {duration: 0s}}]\n")
				out, journal := filepath.Join(dir, "out"), filepath.Join(dir, "j")
				if _, errs, code := runCLI(t, "", "run", "-q", "--journal", journal, "-i", input, "-o", out, p); code != 0 {
					t.Fatalf("exit %d: %s", code, errs)
				}
				full, _ := os.ReadFile(out)
				// Pretend the run died after record seq: the header (if any) and seq rows.
				lines := strings.SplitAfter(string(full), "\n")
				rows := seq + 1
				if strings.Contains(tt.dialect, "header: false") || seq == 0 {
					rows = seq
				}
				cut := len(strings.Join(lines[:rows], ""))
				var entry map[string]any
				data, _ := os.ReadFile(journal)
				json.Unmarshal(data, &entry)
				sum := sha256.Sum256(full[:cut])
				entry["seq"], entry["output_bytes"], entry["output_sha256"], entry["done"] = seq, cut, hex.EncodeToString(sum[:]), false
				data, _ = json.Marshal(entry)
				os.WriteFile(journal, data, 0o644)
				after := full[cut:min(len(full), cut+300)] // what was written after the entry, and more
				os.WriteFile(out, append(append(full[:cut:cut], after...), "GARBAGE,half a"...), 0o644)

				if _, errs, code := runCLI(t, "", "run", "-q", "--journal", journal, "--resume", "-i", input, "-o", out, p); code != 0 {
					t.Fatalf("resume: exit %d: %s", code, errs)
				}
				got, _ := os.ReadFile(out)
				if !bytes.Equal(got, full) {
					t.Errorf("resumed output differs from the full run (%d bytes vs %d; headers: %d):\n%s", len(got), len(full), strings.Count(string(got), "name"), got[max(0, cut-200):min(len(got), cut+200)])
				}
			})
		}
	}
}

// TestResumeFinishedRun resumes a run whose journal says it finished: the
// output must stay as it is (a count must not append a second total).
func TestResumeFinishedRun(t *testing.T) {
	dir := t.TempDir()
	input := writeFile(t, dir, "in.txt", "a\nb\nc\n")
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}, {use: count}]\n")
	out, journal := filepath.Join(dir, "out.txt"), filepath.Join(dir, "j")
	for i := range 2 {
		if _, errs, code := runCLI(t, "", "run", "-q", "--journal", journal, "--resume", "-i", input, "-o", out, p); code != 0 {
			t.Fatalf("run %d: exit %d: %s", i+1, code, errs)
		}
		if got, _ := os.ReadFile(out); string(got) != "3\n" {
			t.Fatalf("after run %d the output is %q", i+1, got)
		}
	}
}

// TestJournalRefusesAChangedRun interrupts a journaled run (a record fails
// until a flag file exists), changes one thing, and resumes: a changed
// input, pipeline or output is refused with exit 2 naming what changed,
// the output is left as it was (never padded), and a finished run whose
// output is gone does not report success. What changes nothing (workers)
// resumes to the output of a run never interrupted.
func TestJournalRefusesAChangedRun(t *testing.T) {
	var in, want strings.Builder
	for i := 1; i <= 300; i++ {
		rec := fmt.Sprintf("record %d", i)
		if i == 200 {
			rec = "record 200 fail"
		}
		fmt.Fprintln(&in, rec)
		fmt.Fprintln(&want, strings.ToUpper(rec))
	}
	const pipeline = `ordered: true
stages:
  - {name: gate, use: exec, with: {command: [sh, -c, 'while read -r l; do case $l in *fail*) [ -e %s ] || exit 1;; esac; printf "%%s\n" "$l"; done']}}
  - {name: shout, use: %s}
`
	tests := []struct {
		name   string
		change func(t *testing.T, dir, input, out, p string)
		code   int
		stderr string
	}{
		{"nothing changed but the workers", func(t *testing.T, dir, input, out, p string) {
			writeFile(t, dir, "flag", "")
		}, 0, ""},
		{"input content, same size and time", func(t *testing.T, dir, input, out, p string) {
			fi, _ := os.Stat(input)
			data, _ := os.ReadFile(input)
			data[0] = 'R'
			os.WriteFile(input, data, 0o644)
			os.Chtimes(input, fi.ModTime(), fi.ModTime())
		}, 2, "the input's content changed since the journal was written"},
		{"input size", func(t *testing.T, dir, input, out, p string) {
			f, _ := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("one more\n")
			f.Close()
		}, 2, "changed since the journal was written (3197 bytes, now 3206)"},
		{"a stage", func(t *testing.T, dir, input, out, p string) {
			data, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(data, []byte("use: upper"), []byte("use: lower"), 1), 0o644)
		}, 2, `stage "shout" changed since the journal was written`},
		{"output shortened", func(t *testing.T, dir, input, out, p string) {
			os.Truncate(out, 10)
		}, 2, "is 10 bytes, shorter than the"},
		{"output removed", func(t *testing.T, dir, input, out, p string) {
			os.Remove(out)
		}, 2, "was removed since the journal was written"},
		{"output rewritten", func(t *testing.T, dir, input, out, p string) {
			data, _ := os.ReadFile(out)
			data[3] = 'x'
			os.WriteFile(out, data, 0o644)
		}, 2, "changed since the journal was written (its first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			input := writeFile(t, dir, "in.txt", in.String())
			p := writeFile(t, dir, "p.yaml", fmt.Sprintf(pipeline, filepath.Join(dir, "flag"), "upper"))
			out, journal := filepath.Join(dir, "out.txt"), filepath.Join(dir, "j")
			args := []string{"run", "-q", "--progress", "none", "--journal", journal, "--resume", "-i", input, "-o", out, p}
			if res := relRun(t, nil, nil, args...); res.code != 1 {
				t.Fatalf("first run: exit %d, want 1; stderr:\n%s", res.code, res.stderr)
			}
			tt.change(t, dir, input, out, p)
			before, _ := os.ReadFile(out)
			res := relRun(t, nil, nil, append(args, "--set", "stages.shout.workers=3")...)
			if res.code != tt.code || !strings.Contains(res.stderr, tt.stderr) {
				t.Fatalf("resume: exit %d, want %d with %q; stderr:\n%s", res.code, tt.code, tt.stderr, res.stderr)
			}
			after, _ := os.ReadFile(out)
			if tt.code == 0 {
				if string(after) != want.String() {
					t.Errorf("resumed output differs from an uninterrupted run's")
				}
				// Finished: the output is gone, and a resume must not say
				// all is well.
				os.Remove(out)
				if res := relRun(t, nil, nil, args...); res.code != 2 || !strings.Contains(res.stderr, "removed") {
					t.Errorf("resume of a finished run without its output: exit %d; stderr:\n%s", res.code, res.stderr)
				}
				return
			}
			if !bytes.Equal(after, before) || bytes.IndexByte(after, 0) >= 0 {
				t.Errorf("a refused resume changed the output (%d bytes before, %d after)", len(before), len(after))
			}
			if !strings.Contains(res.stderr, "to start afresh, run without --resume") {
				t.Errorf("stderr does not say how to start afresh:\n%s", res.stderr)
			}
		})
	}
}

// TestResumeFailedKilled kills a re-run of dead letters (SIGKILL) after it
// wrote some of its records, and re-runs again: each record comes out
// once.
func TestResumeFailedKilled(t *testing.T) {
	dir := t.TempDir()
	broken := writeFile(t, dir, "broken", "")
	writeFile(t, dir, "hang", "")
	writeFile(t, dir, "plugin.sh", `while IFS= read -r line; do
  case "$line" in *BAD*) [ -e broken ] && { echo "down: $line" >&2; exit 1; } ;; esac
  case "$line" in *"BAD 3"*) [ -e hang ] && { echo $$ > reached; sleep 1000; } ;; esac
  echo "ok:$line"
done
`)
	p := writeFile(t, dir, "p.yaml", `dead_letter: `+filepath.Join(dir, "dl.jsonl")+`
ordered: true
stages:
  - {use: upper}
  - name: call
    use: exec
    with: {command: [sh, plugin.sh], mode: per-record}
    on_error: dead-letter
`)
	out := filepath.Join(dir, "out.txt")
	if _, errs, code := runCLI(t, "a\nbad 1\nbad 2\nbad 3\nb\n", "run", "-q", "-o", out, p); code != 3 {
		t.Fatalf("first run: exit %d, want 3: %s", code, errs)
	}
	os.Remove(broken)
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "--resume-failed", "-o", out, p)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var plugin int
	for i := 0; i < 1000 && plugin == 0; i++ {
		data, _ := os.ReadFile(filepath.Join(dir, "reached"))
		plugin, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 500 && !strings.Contains(readString(out), "BAD 2"); i++ {
		time.Sleep(10 * time.Millisecond) // the records before are out
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if plugin > 0 {
		syscall.Kill(-plugin, syscall.SIGKILL)
	}
	if got := readString(out); !strings.Contains(got, "ok:BAD 2") {
		t.Fatalf("the killed re-run wrote %q: the test proves nothing", got)
	}
	os.Remove(filepath.Join(dir, "hang"))
	if _, errs, code := runCLI(t, "", "run", "-q", "--resume-failed", "-o", out, p); code != 0 {
		t.Fatalf("second re-run: exit %d, want 0: %s", code, errs)
	}
	if got, want := readString(out), "ok:A\nok:B\nok:BAD 1\nok:BAD 2\nok:BAD 3\n"; got != want {
		t.Errorf("output %q, want %q: each record once", got, want)
	}
}

// TestResumeFailedCSVHeader re-runs the dead letters of a run that wrote
// no row, so that its CSV output is empty, into that output: a re-run
// killed after the header and a row is run again from the empty file,
// which must then get its header again (it was read from the bytes the
// second re-run cuts off, and taken as already there).
func TestResumeFailedCSVHeader(t *testing.T) {
	dir := t.TempDir()
	broken := writeFile(t, dir, "broken", "")
	writeFile(t, dir, "hang", "")
	writeFile(t, dir, "plugin.sh", `while IFS= read -r line; do
  [ -e broken ] && { echo "down: $line" >&2; exit 1; }
  case "$line" in *'"3"'*) [ -e hang ] && { echo $$ > reached; sleep 1000; } ;; esac
  echo "$line"
done
`)
	p := writeFile(t, dir, "p.yaml", `input: {format: csv}
output: {format: csv}
dead_letter: `+filepath.Join(dir, "dl.jsonl")+`
ordered: true
stages:
  - {name: call, use: exec, with: {command: [sh, plugin.sh], mode: per-record}, on_error: dead-letter}
`)
	in := writeFile(t, dir, "in.csv", "n\n1\n2\n3\n")
	out := filepath.Join(dir, "out.csv")
	if _, errs, code := runCLI(t, "", "run", "-q", "-i", in, "-o", out, p); code != 3 || readString(out) != "" {
		t.Fatalf("first run: exit %d, want 3, output %q: %s", code, readString(out), errs)
	}
	os.Remove(broken)
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "--resume-failed", "-i", in, "-o", out, p)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var plugin int
	for i := 0; i < 1000 && plugin == 0; i++ {
		data, _ := os.ReadFile(filepath.Join(dir, "reached"))
		plugin, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 500 && !strings.Contains(readString(out), "2\n"); i++ {
		time.Sleep(10 * time.Millisecond) // the records before are out
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if plugin > 0 {
		syscall.Kill(-plugin, syscall.SIGKILL)
	}
	if got := readString(out); got != "n\n1\n2\n" {
		t.Fatalf("the killed re-run wrote %q: the test proves nothing\n%s", got, stderr.String())
	}
	os.Remove(filepath.Join(dir, "hang"))
	if _, errs, code := runCLI(t, "", "run", "-q", "--resume-failed", "-i", in, "-o", out, p); code != 0 {
		t.Fatalf("second re-run: exit %d, want 0: %s", code, errs)
	}
	if got, want := readString(out), "n\n1\n2\n3\n"; got != want {
		t.Errorf("output %q, want %q: one header, each record once", got, want)
	}
}

func readString(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// TestJournalKeepsDeadLetters interrupts a journaled run (a record fails
// until a flag file exists) after two records were dead-lettered, and
// resumes: a dead-letter file removed or cut since is refused with exit 2
// (its records are done: the resume would lose them), and an untouched
// one resumes to each dead letter once and exit 3, as a run never
// interrupted ends, though the resumed part dead-lettered nothing.
func TestJournalKeepsDeadLetters(t *testing.T) {
	var in strings.Builder
	for i := 1; i <= 300; i++ {
		rec := fmt.Sprintf("record %d", i)
		switch i {
		case 5, 10:
			rec += " bad"
		case 200:
			rec += " fail"
		}
		fmt.Fprintf(&in, "%q\n", rec)
	}
	const pipeline = `ordered: true
stages:
  - {name: sift, use: jq, on_error: dead-letter, with: {query: 'if test("bad") then error("bad record") else . end'}}
  - {name: gate, use: exec, with: {command: [sh, -c, 'while read -r l; do case $l in *fail*) [ -e %s ] || exit 1;; esac; printf "%%s\n" "$l"; done']}}
`
	tests := []struct {
		name   string
		change func(dl string)
		code   int
		stderr string
	}{
		{"untouched", func(string) {}, 3, "2 records dead-lettered to "},
		{"removed", func(dl string) { os.Remove(dl) }, 2, "dead-letter file"},
		{"cut", func(dl string) { os.Truncate(dl, 20) }, 2, "dead-letter file"},
		{"rewritten", func(dl string) {
			data, _ := os.ReadFile(dl)
			data[5] = 'X'
			os.WriteFile(dl, data, 0o644)
		}, 2, "dead-letter file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			input := writeFile(t, dir, "in.txt", in.String())
			p := writeFile(t, dir, "p.yaml", fmt.Sprintf(pipeline, filepath.Join(dir, "flag")))
			out, journal, dl := filepath.Join(dir, "out.txt"), filepath.Join(dir, "j"), filepath.Join(dir, "dl.jsonl")
			// Not -q: the line that says why a run exits 3 is shown.
			args := []string{"run", "--progress", "none", "--journal", journal, "--resume", "-i", input, "-o", out, "--dead-letter", dl, p}
			if res := relRun(t, nil, nil, args...); res.code != 1 {
				t.Fatalf("first run: exit %d, want 1; stderr:\n%s", res.code, res.stderr)
			}
			tt.change(dl)
			writeFile(t, dir, "flag", "")
			res := relRun(t, nil, nil, args...)
			if res.code != tt.code || !strings.Contains(res.stderr, tt.stderr) {
				t.Fatalf("resume: exit %d, want %d with %q; stderr:\n%s", res.code, tt.code, tt.stderr, res.stderr)
			}
			if tt.code != 3 {
				return
			}
			data, _ := os.ReadFile(dl)
			if !strings.Contains(string(data), `"seq":5,`) || !strings.Contains(string(data), `"seq":10,`) || strings.Count(string(data), "\n") != 2 {
				t.Errorf("dead letters after the resume:\n%s", data)
			}
			// A resume of the finished run says the same.
			if res := relRun(t, nil, nil, args...); res.code != 3 || !strings.Contains(res.stderr, tt.stderr) {
				t.Errorf("resume of the finished run: exit %d; stderr:\n%s", res.code, res.stderr)
			}
		})
	}
}
