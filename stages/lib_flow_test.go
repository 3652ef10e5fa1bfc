package stages_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

func TestLibFlowStages(t *testing.T) {
	tests := []libCase{
		{"dedupe records", "dedupe", nil, []string{"a", "b", "a", "", "b", "", "c"}, []string{"a", "b", "", "c"}},
		{"dedupe window forgets oldest", "dedupe", map[string]any{"window": 2}, []string{"a", "b", "a", "c", "a", "c"}, []string{"a", "b", "c", "a"}},
		{"dedupe key", "dedupe", map[string]any{"key": "id"},
			[]string{`{"id":1,"v":"x"}`, `{"v":"y", "id": 1}`, `{"id":"1"}`, `{"id":[1, 2]}`, `{"id":[1, 2],"v":0}`},
			[]string{`{"id":1,"v":"x"}`, `{"id":"1"}`, `{"id":[1, 2]}`}},

		{"take some", "take", map[string]any{"n": 2}, []string{"a", "b", "c", "d"}, []string{"a", "b"}},
		{"take more than there is", "take", map[string]any{"n": 5}, []string{"a", "b"}, []string{"a", "b"}},
		{"take none", "take", map[string]any{"n": 0}, []string{"a", "b"}, nil},

		{"sample all", "sample", map[string]any{"rate": 1.0}, []string{"a", "b", "c"}, []string{"a", "b", "c"}},

		{"batch full and partial", "batch", map[string]any{"size": 2},
			[]string{`{"a":1}`, "text", `"quoted"`, ` 1`, "[1, 2]", "tab\tquote\"back\\slash\x01"},
			[]string{`[{"a":1},"text"]`, `["\"quoted\""," 1"]`, `[[1, 2],"tab\tquote\"back\\slash\u0001"]`}},
		{"batch only partial", "batch", map[string]any{"size": 100, "max_wait": time.Duration(0)}, []string{"1", "x"}, []string{`[1,"x"]`}},
		{"batch nothing", "batch", nil, nil, nil},
		{"batch html left alone", "batch", map[string]any{"size": 1}, []string{"<a&b>"}, []string{`["<a&b>"]`}},

		{"unbatch", "unbatch", nil, []string{`[1, "two", {"three": 3}, "fo\"ur", null, []]`, `[]`, ` [ "\u00e9" ] `},
			[]string{"1", "two", `{"three": 3}`, `fo"ur`, "null", "[]", "é"}},

		{"count", "count", nil, []string{"a", "b", "c"}, []string{"3"}},
		{"count nothing", "count", nil, nil, []string{"0"}},
		{"count every", "count", map[string]any{"every": 2}, []string{"a", "b", "c", "d", "e"}, []string{"2", "4", "5"}},
		{"count every ends on total", "count", map[string]any{"every": 2}, []string{"a", "b", "c", "d"}, []string{"2", "4"}},

		{"rate_limit passes all", "rate_limit", map[string]any{"per_second": 1e6, "burst": 10}, []string{"a", "b", "c"}, []string{"a", "b", "c"}},
	}
	libRunCases(t, tests)
}

// TestLibDedupeWindow checks dedupe against a plain model, a list of the
// last window distinct records, on random records from a small alphabet so
// that the window fills, wraps and forgets many times.
func TestLibDedupeWindow(t *testing.T) {
	for _, window := range []int{1, 2, 3, 10, 17, 100, 1000} {
		t.Run(fmt.Sprint("window ", window), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(window), 1))
			recs := make([]string, 20000)
			for i := range recs {
				recs[i] = strconv.Itoa(rng.IntN(3*window/2 + 2))
			}
			var want, remembered []string
			for _, r := range recs {
				if slices.Contains(remembered, r) {
					continue
				}
				want = append(want, r)
				remembered = append(remembered, r)
				if len(remembered) > window {
					remembered = remembered[1:]
				}
			}
			got := libRun(t, libNew(t, "dedupe", map[string]any{"window": window}), recs...)
			if !libEqual(got, want) {
				t.Errorf("dedupe kept %d records, the model %d", len(got), len(want))
			}
		})
	}
}

// TestLibTakeStops checks that take returns ErrStop exactly once, with the
// n-th record, and then filters the records in flight.
func TestLibTakeStops(t *testing.T) {
	st := libNew(t, "take", map[string]any{"n": 2})
	for i, want := range []struct {
		out  string
		stop bool
	}{{"r0", false}, {"r1", true}, {"", false}, {"", false}} {
		out, err := libProcess(st, nil, fmt.Sprintf("r%d", i))
		if got := strings.Join(out, ""); got != want.out || errors.Is(err, stages.ErrStop) != want.stop {
			t.Errorf("record %d: %q, %v; want %q, stop %v", i, got, err, want.out, want.stop)
		}
		if err != nil && !want.stop {
			t.Errorf("record %d: error %v", i, err)
		}
	}
}

// TestLibSample checks that a seed makes the choice repeatable and that
// the share kept is near rate.
func TestLibSample(t *testing.T) {
	recs := make([]string, 10000)
	for i := range recs {
		recs[i] = strconv.Itoa(i)
	}
	tests := []struct {
		rate float64
		seed int
	}{{0.25, 1}, {0.5, 42}, {0.01, 7}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rate), func(t *testing.T) {
			with := map[string]any{"rate": tt.rate, "seed": tt.seed}
			a := libRun(t, libNew(t, "sample", with), recs...)
			b := libRun(t, libNew(t, "sample", with), recs...)
			if !libEqual(a, b) {
				t.Errorf("two runs with seed %d differ", tt.seed)
			}
			other := libRun(t, libNew(t, "sample", map[string]any{"rate": tt.rate, "seed": tt.seed + 1}), recs...)
			if libEqual(a, other) {
				t.Errorf("seeds %d and %d chose the same records", tt.seed, tt.seed+1)
			}
			// Binomial: 5 standard deviations either side, a false alarm
			// once in millions of seeds (and the seeds are fixed).
			n, p := float64(len(recs)), tt.rate
			mean, sd := n*p, 5*math.Sqrt(n*p*(1-p))
			if k := float64(len(a)); k < mean-sd || k > mean+sd {
				t.Errorf("kept %v of %v at rate %v, want %v±%.0f", k, n, p, mean, sd)
			}
		})
	}
}

// TestLibBatchRoundTrip checks that unbatch gives back exactly the records
// that batch put together, whatever they hold, and that every batch is a
// valid JSON array of at most size elements.
func TestLibBatchRoundTrip(t *testing.T) {
	recs := []string{
		"plain", "", " ", `"a json string"`, `"`, `{"a":[1,2,{"b":null}]}`, `{"a": 1 }`, "  {\"a\":1}", `{"a":1}` + "\n",
		"12", "-0.5e3", "1 2", "true", "nul", "null", `[]`, `[1,"x"]`, "tab\there", "new\nline", `back\slash`, `\"`,
		"\x00\x1f\x7f", "é€😀", "\u2028", "<html>&amp;</html>", `{"unclosed":`, "]", "[",
	}
	for _, size := range []int{1, 2, 3, 7, 100} {
		t.Run(fmt.Sprint("size ", size), func(t *testing.T) {
			batches := libRun(t, libNew(t, "batch", map[string]any{"size": size}), recs...)
			for _, b := range batches {
				var elems []json.RawMessage
				if err := json.Unmarshal([]byte(b), &elems); err != nil || len(elems) > size || len(elems) == 0 {
					t.Fatalf("batch %q: %d elements, %v", b, len(elems), err)
				}
			}
			got := libRun(t, libNew(t, "unbatch", nil), batches...)
			if !libEqual(got, recs) {
				t.Errorf("unbatch(batch(records)) =\n%q\nwant\n%q", got, recs)
			}
		})
	}
}

// TestLibBatchIdle checks that batch asks for an idle flush only when it
// has a max_wait, and that the flush empties the batch.
func TestLibBatchIdle(t *testing.T) {
	if _, ok := libNew(t, "batch", map[string]any{"max_wait": time.Duration(0)}).(stages.Idler); ok {
		t.Errorf("batch with max_wait 0 is an Idler")
	}
	st := libNew(t, "batch", map[string]any{"size": 3, "max_wait": 250 * time.Millisecond})
	idler, ok := st.(stages.Idler)
	if !ok {
		t.Fatalf("batch with max_wait is not an Idler")
	}
	if d := idler.IdleAfter(); d != 250*time.Millisecond {
		t.Errorf("IdleAfter() = %v, want max_wait", d)
	}
	var got []string
	for _, rec := range []string{"a", "flush", "b", "c", "d", "flush", "flush"} {
		if rec == "flush" {
			out, err := idler.Flush(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, libStrings(out)...)
			continue
		}
		out, err := libProcess(st, nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out...)
	}
	if want := []string{`["a"]`, `["b","c","d"]`}; !libEqual(got, want) {
		t.Errorf("batches %q, want %q", got, want)
	}
}

// TestLibRateLimitWaits checks that rate_limit lets a burst through, then
// waits for the next token until its context is cancelled.
func TestLibRateLimitWaits(t *testing.T) {
	defer goleak.VerifyNone(t)
	// One record an hour: after the burst, the fourth record must wait.
	st := libNew(t, "rate_limit", map[string]any{"per_second": 1.0 / 3600, "burst": 3})
	if got := libRun(t, st, "a", "b", "c"); len(got) != 3 {
		t.Fatalf("the burst of 3 gave %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := st.Process(ctx, []byte("d"), nil)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "rate limit") {
			t.Errorf("cancelled wait: error %v, want one wrapping context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("rate_limit did not return when its context was cancelled")
	}
	// A deadline the next token cannot meet is an error at once.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := st.Process(ctx, []byte("e"), nil); err == nil {
		t.Errorf("waiting an hour within a minute's deadline: no error")
	}
}

// TestLibSpecs checks what the runner relies on in each spec: one worker
// for the stages that must see every record, and Batch only for stages
// that never wait.
func TestLibSpecs(t *testing.T) {
	tests := []struct {
		name       string
		batch      bool
		maxWorkers int
	}{
		{"split", true, 0}, {"template", true, 0}, {"truncate", true, 0},
		{"base64.encode", true, 0}, {"base64.decode", true, 0}, {"hash", true, 0}, {"gzip", true, 0}, {"gunzip", true, 0},
		{"dedupe", true, 1}, {"take", true, 1}, {"sample", true, 0}, {"batch", true, 1}, {"unbatch", true, 0},
		{"rate_limit", false, 1}, {"count", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := stages.Lookup(tt.name)
			if !ok {
				t.Fatalf("%s is not registered", tt.name)
			}
			if s.Batch != tt.batch || s.MaxWorkers != tt.maxWorkers {
				t.Errorf("%s: Batch %v, MaxWorkers %d; want %v, %d", tt.name, s.Batch, s.MaxWorkers, tt.batch, tt.maxWorkers)
			}
			if !strings.HasSuffix(s.Doc, ".") || len(s.Doc) < 20 {
				t.Errorf("%s: Doc %q is not a sentence", tt.name, s.Doc)
			}
			for _, o := range s.Options {
				if o.Doc == "" {
					t.Errorf("%s: option %s has no Doc", tt.name, o.Name)
				}
			}
		})
	}
}
