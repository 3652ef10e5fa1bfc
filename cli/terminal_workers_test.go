package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivo/uniseg"
)

// TestTerminalWorkers runs `flowrun run --broker embedded` on a terminal
// with a `flowrun worker` process joining it from outside, and reads
// what a person sees: a line for the worker with its host:pid, its busy
// slots and its stages with their slots, no line of the block as wide
// as the terminal, and at the end the summary's workers (the slots that
// joined, not the pipeline's) and the worker's records.
func TestTerminalWorkers(t *testing.T) {
	for _, cols := range []int{60, 120} {
		t.Run(strconv.Itoa(cols)+" columns", func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "p.yaml", `name: scaled
stages:
  - {name: slow, use: sleep, with: {duration: 4ms}, workers: 2}
  - {name: upper, use: upper}
`)
			const n = 1200
			in := writeFile(t, dir, "in.txt", rLines(n))
			out := filepath.Join(dir, "out.txt")
			// No local workers: the run waits for the worker, so that its
			// line is seen while the block is live.
			cmd := exec.Command(flowrunBin, "run", "--broker", "embedded", "--no-local-workers", "--run-id", "tw",
				"--progress-every", "50ms", "-i", in, "-o", out, p)
			term := startOnTerminal(t, cmd, cols, 30, []string{"input", "slow", "upper", "output"})
			url := term.waitRaw(t, regexp.MustCompile(`embedded broker at (nats://[0-9.:]+)`))
			w := startWorker(t, p, "--broker", url, "--set", "stages.slow.workers=3")
			host, _ := os.Hostname()
			name := host + ":" + strconv.Itoa(w.cmd.Process.Pid)
			term.mu.Lock()
			term.names = append(term.names, " "+name) // its line is checked as the block's are
			term.mu.Unlock()
			if code := term.wait(t, cmd); code != 0 {
				t.Errorf("exit %d:\n%s", code, strings.Join(term.screen(), "\n"))
			}
			final := strings.Join(term.report(t), "\n")

			// What was drawn, line by line: the worker's lines while live.
			raw := escapes.ReplaceAllString(term.raw.String(), "")
			live := regexp.MustCompile(`^ ` + regexp.QuoteMeta(name) + `\s+busy [0-4]/4  slow×3 upper×1\b`)
			var seen, wide int
			for _, line := range strings.Split(raw, "\n") {
				line = strings.TrimRight(line, "\r")
				if live.MatchString(line) {
					seen++
				}
				if (strings.HasPrefix(line, " "+name) || strings.HasPrefix(line, "workers ")) && uniseg.StringWidth(line) >= cols {
					wide++
					t.Errorf("a line of the workers %d wide on a terminal %d wide: %q", uniseg.StringWidth(line), cols, line)
				}
			}
			if seen == 0 {
				t.Errorf("no live line for the worker %s with its busy slots and stages; the final screen:\n%s\nthe worker said:\n%s", name, final, w.stderr)
			}
			if !regexp.MustCompile(`(?m)^workers +1 working`).MatchString(final) {
				t.Errorf("the final block does not say 1 worker working:\n%s", final)
			}
			if !regexp.MustCompile(`(?m)^ ` + regexp.QuoteMeta(name) + ` +done`).MatchString(final) {
				t.Errorf("the final block has no line for the worker, done:\n%s", final)
			}
			// The summary: the worker with its stages, slots and records
			// (prose, wrapped at the width), and at 120 columns the table's
			// workers column: the slots that joined, 3 and 1.
			prose := strings.Join(strings.Fields(final[strings.Index(final, "records in"):]), " ")
			if want := fmt.Sprintf("1 worker: %s slow×3 %d records, upper×1 %d records", name, n, n); !strings.Contains(prose, want) {
				t.Errorf("the summary does not say %q:\n%s", want, final)
			}
			if cols == 120 {
				for _, row := range []string{`(?m)^slow +3 +1200 +1200\b`, `(?m)^upper +1 +1200 +1200\b`} {
					if !regexp.MustCompile(row).MatchString(final) {
						t.Errorf("the summary has no row %s:\n%s", row, final)
					}
				}
			}
			if got, _ := os.ReadFile(out); strings.Count(string(got), "\n") != n || !strings.Contains("\n"+string(got), "\nR1\n") {
				t.Errorf("output: %d lines, starts %q", strings.Count(string(got), "\n"), head(string(got)))
			}
			if code := w.stop(t); code != 0 {
				t.Errorf("worker: exit %d:\n%s", code, w.stderr)
			}
		})
	}
}

// waitRaw waits, for at most a minute, until what flowrun wrote matches
// re, and returns its first group.
func (term *terminal) waitRaw(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		term.mu.Lock()
		m := re.FindStringSubmatch(term.raw.String())
		term.mu.Unlock()
		if m != nil {
			return m[1]
		}
		select {
		case <-term.done:
			t.Fatalf("flowrun ended without writing %s:\n%s", re, term.raw.String())
		default:
		}
	}
	t.Fatalf("flowrun did not write %s within a minute:\n%s", re, term.raw.String())
	return ""
}
