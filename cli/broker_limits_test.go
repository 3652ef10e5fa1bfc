package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestBrokerRecordTooLarge: a record larger than the broker takes in a
// message (the embedded server's max_payload, 1 MB), as a stage's input
// or as a result a worker made of it (base64 makes 800 kB into 1.07 MB),
// fails as its stage's on_error says, with a reason that
// names the record, the stage, its size and the broker's limit; the
// records around it are done. It failed the run whatever on_error said
// (the input), and was published in vain on each delivery until
// --max-deliver, then dead-lettered as a worker that died (the result).
func TestBrokerRecordTooLarge(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		name, use, onError string
		size               int // of record 3
		code               int
		out                int    // records in the output
		reason             string // in the dead letter or the error
	}{
		{"input, dead-letter", "upper", "dead-letter", 1_100_000, 3, 4, "a record of 1100000 bytes is more than broker nats://"},
		{"input, skip", "upper", "skip", 1_100_000, 3, 4, ""},
		{"input, fail", "upper", "fail", 1_100_000, 1, 2, `stage "big" record 3 "xxxx`},
		{"input under max_payload, over three quarters of it", "upper", "fail", 1_000_000, 0, 5, ""},
		{"result, dead-letter", "base64.encode", "dead-letter", 800_000, 3, 4, "its result of 1066668 bytes is more than broker nats://"},
		{"result, fail", "base64.encode", "fail", 800_000, 1, 2, `stage "big" record 3 "xxxx`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := strings.NewReplacer(" ", "_", ",", "").Replace(tt.name)
			dl := filepath.Join(dir, name+"-dl.jsonl")
			file := writeFile(t, dir, name+".yaml", fmt.Sprintf(`name: big
ordered: true
dead_letter: %s
stages:
  - name: big
    use: %s
    on_error: %s
    workers: 2
`, dl, tt.use, tt.onError))
			in := fmt.Sprintf("a\nb\n%s\nd\ne\n", strings.Repeat("x", tt.size))
			input := writeFile(t, dir, name+".txt", in)
			out, stats := filepath.Join(dir, name+".out"), filepath.Join(dir, name+".stats")
			_, stderr, code := runCLI(t, "", "run", file, "-q", "--progress", "none", "--broker", "embedded",
				"-i", input, "-o", out, "--stats", stats, "--max-deliver", "2")
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%.2000s", code, tt.code, stderr)
			}
			b, _ := os.ReadFile(out)
			if n := strings.Count(string(b), "\n"); n != tt.out {
				t.Errorf("%d records out, want %d:\n%.300s", n, tt.out, b)
			}
			var st brokerStats
			if s, err := os.ReadFile(stats); err != nil || json.Unmarshal(s, &st) != nil || len(st.Stages) != 1 {
				t.Fatalf("stats: %v", err)
			}
			sg := st.Stages[0]
			if wantErrors := min(tt.code, 1); !sg.Remote || sg.Errors != int64(wantErrors) || tt.onError == "skip" && sg.Skipped != 1 || tt.onError == "dead-letter" && sg.DeadLettered != 1 {
				t.Errorf("stage counts: %+v", sg)
			}
			switch {
			case tt.code == 1:
				if !strings.Contains(stderr, tt.reason) || !strings.Contains(stderr, "max_payload") {
					t.Errorf("the failure does not name the record, the stage and the broker's limit:\n%.2000s", stderr)
				}
			case tt.onError == "dead-letter":
				d, err := os.ReadFile(dl)
				if err != nil {
					t.Fatal(err)
				}
				var letter struct {
					Stage, Error string
					Seq          uint64
				}
				if err := json.Unmarshal(d[:strings.IndexByte(string(d), '\n')], &letter); err != nil {
					t.Fatalf("dead letter: %v\n%.300s", err, d)
				}
				if letter.Stage != "big" || letter.Seq != 3 || !strings.Contains(letter.Error, tt.reason) || !strings.Contains(letter.Error, "max_payload") {
					t.Errorf("dead letter: %+v; want stage big, record 3, an error with %q and the broker's max_payload", letter, tt.reason)
				}
			}
		})
	}
}
