package transport

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	_ "github.com/flowrun/flowrun/stages/all"
)

func testPipeline(t *testing.T, yaml string) *spec.Pipeline {
	t.Helper()
	p, err := spec.Parse("p.yaml", []byte(yaml), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testBroker(t *testing.T) *Server {
	t.Helper()
	srv, err := StartEmbedded(context.Background(), EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// testConn is a connection to a broker of the test's own, both closed at
// the test's end.
func testConn(t *testing.T) *nats.Conn {
	t.Helper()
	srv := testBroker(t)
	nc, err := Dial(context.Background(), srv.URL(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// serveWorker starts a worker of p on nc, which serves until stop (or
// the test's end); stop says what Serve returned.
func serveWorker(t *testing.T, ctx context.Context, nc *nats.Conn, p *spec.Pipeline) (stop func() error) {
	t.Helper()
	w, err := NewWorker(nc, p, WorkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- w.Serve(wctx) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			serveErr = <-served
			w.Close()
		})
		return serveErr
	}
	t.Cleanup(func() { stop() })
	return stop
}

// stageConsumer is what the broker says of the consumer of the first
// stage of a run (info), nil when it cannot say (not there yet).
func stageConsumer(ctx context.Context, js jetstream.JetStream, info RunInfo) *jetstream.ConsumerInfo {
	stream, err := js.Stream(ctx, info.Stream)
	if err != nil {
		return nil
	}
	c, err := stream.Consumer(ctx, info.Stages[0].Consumer)
	if err != nil {
		return nil
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return ci
}

// TestPieceSpreadOverIdleSlots: the records of one piece of a stage that
// takes one record at a time are worked at once by the worker's idle
// slots, not one after another by one of them. Each record here waits
// (10 s at most) until all four are being worked.
func TestPieceSpreadOverIdleSlots(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	nc := testConn(t)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	os.Mkdir(started, 0o755)
	script := filepath.Join(dir, "barrier.sh")
	os.WriteFile(script, []byte(`r=$(cat)
touch "`+started+`/$r"
i=0
while [ "$(ls "`+started+`" | wc -l)" -lt 4 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ "$(ls "`+started+`" | wc -l)" -ge 4 ]; then echo "$r"; else echo "alone $r"; fi
`), 0o644)
	p := testPipeline(t, "name: spread\nstages:\n  - name: barrier\n    use: exec\n    with: {command: [sh, "+script+"], mode: per-record}\n    workers: 4\n")
	run, err := NewRun(nc, p, RunOptions{RunID: "spread"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	queues, err := run.Open(ctx, p.Stages)
	if err != nil {
		t.Fatal(err)
	}
	stop := serveWorker(t, ctx, nc, p)

	q := queues["barrier"]
	var recs []runner.Record
	for i := 1; i <= 4; i++ {
		recs = append(recs, runner.Record{Seq: uint64(i), Data: []byte("r" + strconv.Itoa(i))})
	}
	if err := q.Send(ctx, runner.Work{N: 1, Recs: recs}); err != nil {
		t.Fatal(err)
	}
	d, err := q.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.Ack()
	var got []string
	for _, r := range d.Recs {
		got = append(got, string(r.Data))
	}
	if want := []string{"r1", "r2", "r3", "r4"}; d.N != 1 || !slices.Equal(got, want) || d.Counts.In != 4 || d.Counts.Out != 4 {
		t.Errorf("piece %d: %q, counts %+v; want %q, 4 in and out, worked at once", d.N, got, d.Counts, want)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
	if err := run.Close(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestWaitingStagePiecesGather: once its first results say how long a
// record takes, the pieces of a stage that takes one record at a time
// carry several records (before, each was a piece of its own, and cost
// its messages through the broker); the output is the input, in order.
// The worker joins only once the run has sent its first pieces: until
// their results come, the run sends no more than probePieces of one
// record (it waited 100 ms for them, then sent every record as a piece
// of its own, and a loaded machine's first results came later: 500 of 600
// pieces).
func TestWaitingStagePiecesGather(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	nc := testConn(t)
	dir := t.TempDir()
	const n, probe = 600, 64
	var in strings.Builder
	for i := 1; i <= n; i++ {
		in.WriteString(strconv.Itoa(i) + "\n")
	}
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte(in.String()), 0o644)
	out := filepath.Join(dir, "out.txt")
	p := testPipeline(t, "name: gather\nordered: true\ninput: {from: "+filepath.Join(dir, "in.txt")+"}\noutput: {to: "+out+"}\nstages:\n  - name: wait\n    use: sleep\n    with: {duration: 2ms}\n    workers: 4\n")
	run, err := NewRun(nc, p, RunOptions{RunID: "gather"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		sum *runner.Summary
		err error
	}
	ran := make(chan result, 1)
	go func() {
		sum, err := runner.Run(ctx, p, runner.Options{Remote: run})
		ran <- result{sum, err}
	}()
	// queued is what the stage's consumer holds for a worker (0 until
	// the run has opened it).
	info := newRunInfo(p, "gather", "", p.Stages)
	queued := func() uint64 {
		if ci := stageConsumer(ctx, run.js, info); ci != nil {
			return ci.NumPending
		}
		return 0
	}
	for i := 0; queued() < probe && i < 600; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	// A while without results: the run sends nothing more.
	time.Sleep(500 * time.Millisecond)
	if got := queued(); got != probe {
		cancel()
		<-ran
		run.Close(context.Background())
		t.Fatalf("%d pieces queued before any result; want %d", got, probe)
	}
	stop := serveWorker(t, ctx, nc, p)
	res := <-ran
	if err := stop(); err != nil {
		t.Error(err)
	}
	if res.err != nil {
		run.Close(context.Background())
		t.Fatal(res.err)
	}
	var pieces uint64
	if ci := stageConsumer(context.Background(), run.js, info); ci != nil {
		pieces = ci.Delivered.Consumer
	}
	if err := run.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != in.String() {
		t.Errorf("output is not the input in order: %d bytes of %d", len(got), in.Len())
	}
	st := res.sum.Stages[0]
	if st.In != n || st.Out != n {
		t.Errorf("stage counts %+v: want %d in and out", st, n)
	}
	// A piece carries about 50 ms of work (pieceWork) by the time the
	// records took as the worker measured it: about 25 of 2 ms each, fewer
	// on a loaded machine, where a sleep of 2 ms took longer. After the
	// probe, half as many records a piece as that at least, or two.
	per := time.Duration(st.Busy) / time.Duration(max(st.In, 1))
	gathered := max(1, int(50*time.Millisecond/max(per, 1))/2)
	want := max(n/2, probe+(n-probe+gathered-1)/gathered)
	t.Logf("%d pieces for %d records, a record took %v", pieces, n, per)
	if pieces == 0 || pieces > uint64(want) {
		t.Errorf("%d pieces delivered for %d records of %v each: want them gathered, %d at most", pieces, n, per, want)
	}
}

// TestResumedRunCutsAlike: a resumed run cuts its pieces where the
// pieces the dead run left begin and end, so that they are known again
// (keys as Flowrun-Piece has them, with the marks of a piece of the same
// records again).
func TestResumedRunCutsAlike(t *testing.T) {
	q := &stageQueue{cuts: cutsOf(map[string]bool{"3-5": true, "1-1": true, "9-12#40": true, "7-7~1": true, "x": true})}
	tests := []struct {
		seq, hi uint64
		whole   bool
	}{
		{1, 1, true},
		{2, 2, false},
		{3, 5, true},
		{4, 6, false},
		{6, 6, false},
		{7, 7, true},
		{8, 8, false},
		{9, 12, true},
		{13, 0, false},
	}
	for _, tt := range tests {
		if hi, whole := q.Cut(tt.seq); hi != tt.hi || whole != tt.whole {
			t.Errorf("Cut(%d) = %d, %v; want %d, %v", tt.seq, hi, whole, tt.hi, tt.whole)
		}
	}
}

// TestResumedRunTakesUpLeftPieces: a run resumed over the stream of a
// dead one that queued a piece per record takes each of them up, even
// once its own pieces would gather several records: it sends none again,
// and none is worked twice.
func TestResumedRunTakesUpLeftPieces(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	nc := testConn(t)
	dir := t.TempDir()
	const n = 480 // fewer than a stage's pieces on the broker at once (inFlight)
	var in strings.Builder
	var recs []runner.Record
	for i := 1; i <= n; i++ {
		in.WriteString(strconv.Itoa(i) + "\n")
		recs = append(recs, runner.Record{Seq: uint64(i), Data: []byte(strconv.Itoa(i))})
	}
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte(in.String()), 0o644)
	out := filepath.Join(dir, "out.txt")
	p := testPipeline(t, "name: resumed\nordered: true\ninput: {from: "+filepath.Join(dir, "in.txt")+"}\noutput: {to: "+out+"}\nstages:\n  - name: wait\n    use: sleep\n    with: {duration: 1ms}\n    workers: 4\n")

	// The dead run: a piece per record queued, none worked.
	dead, err := NewRun(nc, p, RunOptions{RunID: "resumed"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	queues, err := dead.Open(ctx, p.Stages)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if err := queues["wait"].Send(ctx, runner.Work{N: uint64(i + 1), Recs: recs[i : i+1]}); err != nil {
			dead.Close(ctx)
			t.Fatal(err)
		}
	}
	dead.KeepStream()
	if err := dead.Close(ctx); err != nil {
		t.Fatal(err)
	}

	run, err := NewRun(nc, p, RunOptions{RunID: "resumed", Resume: true, LocalWorkers: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runner.Run(ctx, p, runner.Options{Remote: run})
	if err != nil {
		run.Close(context.Background())
		t.Fatal(err)
	}
	delivered := uint64(0)
	if ci := stageConsumer(ctx, run.js, run.info); ci != nil {
		delivered = ci.Delivered.Consumer
	}
	if err := run.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != in.String() {
		t.Errorf("output is not the input in order: %d bytes of %d", len(got), in.Len())
	}
	if delivered != n {
		t.Errorf("%d pieces delivered: want the %d the dead run left, each once, and none sent again", delivered, n)
	}
}

// TestResumedRunSendsAgainWhatCannotAnswer: a piece a dead run left
// queued whose deliveries are spent (given back by workers on each, the
// last too, as workers that stop serving a dead run do) is never
// delivered again, and stays in the stream. A resumed run that took it up
// waited for its results for ever; it must send it again once nothing
// on the broker can answer it, and end with the whole output, each
// record once.
func TestResumedRunSendsAgainWhatCannotAnswer(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	nc := testConn(t)
	// One piece alone (no other results come to have the run look again)
	// and among others.
	for _, n := range []int{1, 40} {
		t.Run(strconv.Itoa(n), func(t *testing.T) { resumeSpent(t, nc, n) })
	}
}

func resumeSpent(t *testing.T, nc *nats.Conn, n int) {
	dir := t.TempDir()
	var in strings.Builder
	var recs []runner.Record
	for i := 1; i <= n; i++ {
		in.WriteString(strconv.Itoa(i) + "\n")
		recs = append(recs, runner.Record{Seq: uint64(i), Data: []byte(strconv.Itoa(i))})
	}
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte(in.String()), 0o644)
	out := filepath.Join(dir, "out.txt")
	p := testPipeline(t, "name: spent"+strconv.Itoa(n)+"\nordered: true\ninput: {from: "+filepath.Join(dir, "in.txt")+"}\noutput: {to: "+out+"}\nstages:\n  - name: wait\n    use: sleep\n    with: {duration: 1ms}\n    workers: 4\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The dead run: its first piece given back on both its deliveries,
	// then the others queued.
	const maxDeliver = 2
	dead, err := NewRun(nc, p, RunOptions{RunID: "spent" + strconv.Itoa(n), MaxDeliver: maxDeliver})
	if err != nil {
		t.Fatal(err)
	}
	queues, err := dead.Open(ctx, p.Stages)
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		t.Helper()
		if err := queues["wait"].Send(ctx, runner.Work{N: uint64(i + 1), Recs: recs[i : i+1]}); err != nil {
			dead.Close(ctx)
			t.Fatal(err)
		}
	}
	send(0)
	cons, err := dead.js.Consumer(ctx, dead.Stream(), dead.info.Stages[0].Consumer)
	if err != nil {
		t.Fatal(err)
	}
	// The stage's consumer has no MaxDeliver of its own now (workers
	// count the deaths a record causes, alone.go); one made with it (by
	// hand, or by a flowrun before that) gives up on a piece.
	cfg := cons.CachedInfo().Config
	cfg.MaxDeliver = maxDeliver
	if cons, err = dead.js.UpdateConsumer(ctx, dead.Stream(), cfg); err != nil {
		dead.Close(ctx)
		t.Fatal(err)
	}
	for d := 1; d <= maxDeliver; d++ {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			m.Nak()
			got++
		}
		if got != 1 {
			t.Fatalf("delivery %d of the first piece: %d messages (%v)", d, got, batch.Error())
		}
	}
	// The broker gives up on it when it would deliver it again.
	if batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond)); err == nil {
		for m := range batch.Messages() {
			t.Fatalf("the first piece delivered a third time (max deliver %d): %s", maxDeliver, m.Headers().Get(hdrPiece))
		}
	}
	for i := 1; i < n; i++ {
		send(i)
	}
	dead.KeepStream()
	if err := dead.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The run's log is a file: its goroutines write it while the run goes.
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	run, err := NewRun(nc, p, RunOptions{RunID: "spent" + strconv.Itoa(n), Resume: true, LocalWorkers: true, MaxDeliver: maxDeliver, Log: logFile})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runner.Run(ctx, p, runner.Options{Remote: run})
	run.Close(context.Background())
	log, _ := os.ReadFile(logFile.Name())
	if err != nil {
		t.Fatalf("resumed run: %v (waiting for the results of a piece that cannot be delivered again?); log:\n%s", err, log)
	}
	if got, _ := os.ReadFile(out); string(got) != in.String() {
		t.Errorf("output is not the input in order, each record once: %q", got)
	}
	if !strings.Contains(string(log), `1 pieces of stage "wait" that a dead run left on the broker can no longer be answered there`) {
		t.Errorf("the resumed run did not say it sent the spent piece again; log:\n%s", log)
	}
}
