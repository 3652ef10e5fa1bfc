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
	if err := decodeDone(appendDone(nil, d.Recs, &d), &back); err != nil {
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
	if err := decodeDone(appendDone(nil, recs[2:], nil), &part); err != nil || len(part.Recs) != 2 || part.Counts.In != 0 {
		t.Errorf("a part: %+v, %v", part, err)
	}
	for _, bad := range [][]byte{nil, {5}, {1, 2, 200}} {
		if _, err := decodeWork(bad); err == nil && len(bad) > 0 {
			t.Errorf("decodeWork(%v): no error", bad)
		}
	}
}

func TestSplitRecords(t *testing.T) {
	var recs []runner.Record
	for i := range 100 {
		recs = append(recs, runner.Record{Data: make([]byte, 100), Seq: uint64(i)})
	}
	parts := splitRecords(recs, 1000)
	n := 0
	for _, p := range parts {
		if len(p) == 0 || len(p) > 10 {
			t.Fatalf("a part of %d records", len(p))
		}
		n += len(p)
	}
	if n != 100 || len(splitRecords(nil, 10)) != 1 {
		t.Errorf("%d records in parts, want 100", n)
	}
}
