package transport

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/flowrun/flowrun/runner"
)

func TestWireRoundTrip(t *testing.T) {
	recs := []runner.Record{{Data: []byte("a"), Seq: 7}, {Data: []byte(""), Seq: 7}, {Data: []byte("long\x00bytes"), Seq: 9}, {Data: []byte("z"), Seq: 3}}
	got, err := decodeWork(appendRecords(nil, recs))
	if err != nil || !reflect.DeepEqual(got, recs) {
		t.Fatalf("work: %v, %v; want %v", got, err, recs)
	}
	d := runner.Done{
		Recs:   recs[:2],
		Dead:   []runner.Dead{{Letter: runner.DeadLetter{Stage: "s", Error: "bad", Attempts: 2, Seq: 9, Status: 503}, Data: []byte("x")}},
		Fail:   &runner.RecordError{Stage: "s", Seq: 9, Record: []byte("r"), Attempts: 3, Err: errors.New("boom")},
		Counts: runner.Counts{In: 3, Out: 2, Errors: 4, Retries: 1, Skipped: 1, Dead: 1, Busy: time.Second, Redelivered: 2},
	}
	var back runner.Done
	if err := decodeDone(appendDone(nil, resultPart{d.Recs, d.Dead}, &d), &back); err != nil {
		t.Fatal(err)
	}
	if back.Fail == nil || back.Fail.Err.Error() != "boom" {
		t.Fatalf("fail: %+v", back.Fail)
	}
	back.Fail.Err, d.Fail.Err = nil, nil
	if !reflect.DeepEqual(back, d) {
		t.Errorf("done: %+v\nwant %+v", back, d)
	}
	var part runner.Done
	if err := decodeDone(appendDone(nil, resultPart{recs: recs[2:]}, nil), &part); err != nil || len(part.Recs) != 2 || part.Counts.In != 0 {
		t.Errorf("a part: %+v, %v", part, err)
	}
	for _, bad := range [][]byte{nil, {5}, {1, 2, 200}} {
		if _, err := decodeWork(bad); err == nil && len(bad) > 0 {
			t.Errorf("decodeWork(%v): no error", bad)
		}
	}
}

func TestSplitResults(t *testing.T) {
	d := &runner.Done{Fail: &runner.RecordError{Stage: "s", Seq: 1, Record: make([]byte, 900), Err: errors.New("boom")}}
	for i := range 100 {
		d.Recs = append(d.Recs, runner.Record{Data: make([]byte, 100), Seq: uint64(i)})
		d.Dead = append(d.Dead, runner.Dead{Letter: runner.DeadLetter{Stage: "s", Error: "bad"}, Data: make([]byte, 500)})
	}
	parts := splitResults(d, 1000)
	recs, dead := 0, 0
	for k, p := range parts {
		size := 0
		for _, r := range p.recs {
			size += len(r.Data)
		}
		for _, dl := range p.dead {
			size += len(dl.Data)
		}
		if size > 1000 || len(p.recs)+len(p.dead) == 0 && k < len(parts)-1 {
			t.Fatalf("a part of %d records and %d dead letters, %d bytes", len(p.recs), len(p.dead), size)
		}
		recs, dead = recs+len(p.recs), dead+len(p.dead)
	}
	if recs != 100 || dead != 100 {
		t.Errorf("%d records and %d dead letters in parts, want 100 of each", recs, dead)
	}
	if last := parts[len(parts)-1]; len(last.recs) != 0 || len(last.dead) != 0 {
		t.Errorf("the last part, with the failed record of 900 bytes, also holds %d records, %d dead letters", len(last.recs), len(last.dead))
	}
	if len(splitResults(&runner.Done{}, 10)) != 1 {
		t.Error("no results: not one part")
	}
}
