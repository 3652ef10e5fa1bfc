// Package transport carries a pipeline's stage queues over NATS JetStream,
// so that the stages of one run can be worked by `flowrun worker`
// processes on many machines (`flowrun run --broker`).
//
// It is not for a pipeline's input and output on a broker (that is
// connect/nats), nor for running stages (runner does, here and on the
// workers: runner.Processor), nor for ordering, dead letters or counts
// (the run process keeps all of those).
//
// server.go runs a NATS server with JetStream in the process
// (`--broker embedded`, `flowrun broker`); dial.go connects to a broker,
// with its credentials and TLS, and says in plain words why it could not.
//
// # Shape: a hub
//
// The run process stays the hub of the run. For each stage that can run
// elsewhere (runner.IsRemote: not one that holds records across calls or
// must see them all, which the stage registry says with Spec.Local), it
// publishes the stage's input, in pieces, to the subject
// <prefix>.in.<stage>, and takes the results from <prefix>.out.<stage>.
// A piece is the batches at hand gathered (cut under the broker's message
// size), since after a stage that waits each batch is one record and each
// piece costs a few messages: for a cheap stage up to 1024 records; for a
// stage that takes one record at a time, as many as take about 50 ms to
// work by the time its records took lately (runner's pieceWork), so one
// record each until the first results tell (64 of them, or as many as
// the workers' slots for the stage, then it waits for those results),
// and one each for records that take that long.
// A remote stage is thus a drop-in for a local segment of the runner
// (runner.Remote): the reorder window, a failure's cut, take, the stages
// that hold records, dead letters, stats and progress all stay where they
// were. A chain (workers publishing into the next stage's subject) would
// save a hop per stage, but the run could then no longer account for
// every record at one place; batching makes the hop cheap instead.
//
// One stream per run, FLOWRUN_<pipeline>_<run id>, with work-queue
// retention: a piece is removed once acked. Each remote stage has one
// durable pull consumer (in_<n>_<stage>) shared by every worker of the
// stage anywhere: fair dispatch across machines. The run has its own
// durable consumer of each stage's results (out_<n>_<stage>).
//
// # Workers
//
// A worker has a slot per worker of each stage it works (a runner.Processor
// with its own Stage). It deals a piece's records out to its idle slots
// one by one, as the runner's workers take records from a queue (a cheap
// stage's piece goes to one slot whole), so that a piece of many records
// keeps the slots busy without a round trip to the broker per record. It
// pulls only when every record it holds is started, and no more pieces
// than it has idle slots (FetchNoWait sized to them, divided by the
// records of the pieces lately; or a Fetch of one when the queue was
// empty): a busy worker's pre-buffered pieces would wait while other
// workers idle, or pass their ack wait and be worked again elsewhere (the
// known nats.go pitfall). From its fetch until its ack, a piece has
// InProgress sent every third of the ack wait. Once its last record is
// worked (the slot is free again by then), the worker publishes the
// piece's results, whole and in input order, in parts under the broker's
// message size, asynchronously, waits for JetStream's acks of every part,
// and only then acks the piece; an ack that has not come within 10 s
// (pubAckWait, as for the run's pieces: a broker that stalls, a
// JetStream that does not answer) gives the piece back (Nak), to be
// worked again, and the worker says so once. A record that fails the stage under
// on_error: fail ends the piece's results there, as one slot working the
// piece would have stopped. A worker that dies leaves its pieces unacked: JetStream
// delivers them again after the ack wait. A piece delivered a third
// time (a second, with MaxDeliver 3 or less) is worked alone in its
// worker, a record at a time, each announced first on the stage's Tried
// subject (alone.go): a record that ended its worker MaxDeliver-3 times
// alone (at least once) is not worked again (it killed or stalled every
// worker that took it): it fails as its stage's on_error says
// (dead-lettered by the run, skipped, or failing the run), and its piece
// is Termed. Another record's crash never counts against it.
//
// # What workers report
//
// A worker tells each run it works what it does, every second, on the
// run's subject <prefix>.workers (RunInfo.Workers; report.go): its name
// (host:pid, or --name), its id (random, new each time a worker process
// starts), version, and per stage its slots and the busy ones; its last
// report says it left. The run knows workers by their ids: two of one
// name are two, shown with a short id after the name ("twin#3fa2"), and
// one of them killed is said gone while the other reports. Core NATS, not the stream: a
// report lost is followed by the next, and a run's end leaves nothing
// behind. The run keeps a table of them (Run.Workers, the runner's
// Workers: the display, the summary, --stats, the page, the metrics)
// and says a worker gone after five seconds without a word. The records
// each worker did are not taken from its reports, which lag: results
// carry Flowrun-Worker ("ID NAME"), and the run counts a piece's records for the
// worker whose results it took, as it accounts for every record. A
// worker's own metrics (flowrun worker --metrics) come from its Meters.
//
// # Origin and duplicates
//
// Every message carries its origin in headers: Flowrun-Run (the run id),
// Flowrun-Stage, Flowrun-Piece (what the piece holds: its first and last
// input record and a hash of its records' numbers and bytes, lo-hi~hash,
// which names it across a resume), Flowrun-Seq (the input records a
// message holds, lo-hi; each record's own number is in the body), and on
// results Flowrun-Part (k/n of a piece's results), Flowrun-Msg (the
// stream sequence of the piece's message they answer) and
// Flowrun-Attempt (its delivery). Nats-Msg-Id is made of the run, the
// consumer, the run process's incarnation and its count of pieces, and
// for results of the piece's message, the part and the delivery, so a
// piece or a result published again (a publish retried after a lost ack,
// a run or a worker that reconnected) is kept once by JetStream, while
// the answer to a piece a resumed run sends again (another message, of
// another sequence) is never taken by the broker for a copy of the dead
// run's answer to the same records, and dropped (it was, within the
// duplicate window of 2 minutes, and the resumed run waited for ever).
// The results of two deliveries of one piece (a worker that died between
// publishing and acking, or outlived its ack wait) both reach the run:
// it takes the first and acks the other; the parts of one delivery are
// never mixed with another's. A worker that starts a delivery after the
// first says so at once (a Flowrun-Notice message on the stage's Out
// subject), which the run counts as a redelivery in its summary whether
// or not those results ever come.
//
// # Accounting and the end of a run
//
// The run process knows every piece it sent and waits for the results of
// each: every input record comes back as output, filtered (no output),
// skipped or dead-lettered, or fails the run. When the input has ended
// and every piece is answered, the run is complete; it then marks its
// entry in the runs bucket (a KV bucket, flowrun_runs) done and deletes
// its stream, which tells workers the run is over.
//
// # Lease, and runs that died without a word
//
// A new run claims its id first: it creates its entry, opening (workers
// wait for it to be active), and of two runs given one --run-id at once
// only one can. A run touches its entry every RunInfo.Lease
// (DefaultLease, 2 s), and at once after a reconnect: the entry's
// revision time, the broker's clock, says when it last did. A touch is
// a compare-and-set over the run's own last revision, so a run that was
// deleted as dead while it was stopped, or whose entry another process
// wrote (a --resume), finds out and fails saying so, instead of putting
// the entry back. A worker takes the broker's time from the latest
// revision it saw (plus what its own clock says passed since) and stops
// pulling a run silent for leaseLost leases (10 s): a run killed (kill
// -9) leaves its entry active, and each idle pull of its stream held a
// slot of the stage for up to a second, starving the live runs of the
// pipeline. The run's next touch (a --resume) has it served again. A run
// without a journal (RunInfo.Journaled false) can never be resumed: the
// first run to start on the broker once it is silent for garbageAfter
// leases (1 min), of any pipeline, deletes its stream and entry and says
// so in one line; its claim is the entry's purge at the revision it read,
// so of two runs that start at once only one deletes it, and a run that
// touched its entry meanwhile is left alone. The entry's age holds only
// while the broker served: a run last heard of through another server id
// (RunInfo.Server: the broker restarted since, or another server of a
// cluster) may be alive and not yet reconnected, and is deleted only by a
// run that has itself been connected for reapWatch of its leases (at
// least reapWatchMin) without seeing it touch its entry. A run cut off
// from a broker that stays up, or stopped, for a minute is dead to the
// others. A journaled run's stream stays for --resume. A run stream that
// no entry names (its run killed between the two) goes once it is a
// minute old.
//
// # Resume
//
// A journaled run's id comes from its journal, and a run that did not
// finish leaves its stream (and, embedded, the server's store beside the
// journal). Workers that outlive the dead process go on for as long as
// its lease lets them (10 s): they finish the pieces in their hands and
// take those still queued, and their results wait in the stream; the
// resumed run's entry has them back. `--resume` reads the stream first: the pieces
// still queued (or in a worker's hands), and those answered by every
// part of one delivery's results that the dead process never took
// (acked), are known by their Flowrun-Piece. As the resumed run reads its
// input again from where the journal says the output is whole, a piece
// it would send that holds the very same records as one of them is not
// sent: its results come, or came (the dead run's consumer of results is
// made anew, so that what it had taken unacked comes again at once),
// unless the broker turns out to hold nothing that can answer it: a
// stage whose results are waited for from such pieces, with none coming
// for 2 s, looks at its two consumers, and when the stage's has nothing
// left to deliver nor in a worker's hands and every result on the broker
// was delivered to the run, the pieces still waited for are sent after
// all (a piece left queued whose deliveries were spent, given back on
// each by workers that stopped serving a dead run, is never delivered
// again and stays in the stream; a resumed run, killed in its turn and
// resumed again, waited for it for ever). Whichever results of such a
// piece come first are taken, others only counted. The
// resumed run cuts its pieces where those begin and end (runner.Cutter:
// a piece that starts where one was left waits for its records up to
// that one's last, another stops short of the next one left), since the
// pieces it gathers would otherwise not be known as theirs. Any other
// piece is sent, and worked, again: one whose results the dead run had
// taken, and one of the same range but other records (a cheap stage
// gathers the batches at hand; such a piece must not take the dead run's
// results: it lost records when it did, hence the hash in the key). The
// results nothing takes (records before the journal's mark, pieces cut
// otherwise) are never acked, and go with the stream at the run's end; a
// resume of a run whose journal says it finished deletes what it left.
// Into a stage this is at least once; into the output, written from the
// journal's mark in input order, exactly once.
//
// # A broker that lost everything
//
// A broker restarted on an empty store has none of a run's stream: after
// each reconnect the run looks for it, and fails at once when it is gone
// (ErrRunLost); a worker whose watch of the runs bucket ended watches it
// anew (lost.go). What a user reads about the broker is in words, not the
// client library's (words.go).
//
// # Versions
//
// A run's entry in flowrun_runs (and its stream's metadata) holds
// flowrun's build (its version and revision, and for a build of
// uncommitted changes the executable's hash) and a hash of the resolved
// pipeline's stages
// (pipelineHash: names, uses, options, timeouts, retries, on_error;
// workers and buffers excepted). A worker of another version or of a
// different pipeline refuses the run and says why.
package transport
