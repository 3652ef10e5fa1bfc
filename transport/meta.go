package transport

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
)

// runsBucket is the key-value bucket where each run of a pipeline on the
// broker says what it is: its stream, its stages, the flowrun and the
// pipeline it runs, and whether it is over. Workers watch it to join.
const runsBucket = "flowrun_runs"

// The run's states in its RunInfo.
const (
	stateActive = "active"
	stateDone   = "done"
	// stateOpening is a new run's claim of its id, made before its
	// stream: workers wait for it to be active.
	stateOpening = "opening"
)

// RunInfo is a run's entry in the runs bucket.
type RunInfo struct {
	Pipeline string `json:"pipeline"`
	Run      string `json:"run"`
	Stream   string `json:"stream"`
	// Version is the flowrun that runs it; Hash the resolved pipeline's
	// stages, workers excepted (pipelineHash): a worker whose own differ
	// refuses to work for the run.
	Version    string        `json:"version"`
	Hash       string        `json:"hash"`
	State      string        `json:"state"`
	Host       string        `json:"host"`
	Started    time.Time     `json:"started"`
	AckWait    time.Duration `json:"ack_wait"`
	MaxDeliver int           `json:"max_deliver"`
	Stages     []StageInfo   `json:"stages"`
	// Workers is the subject where the run's workers report what they
	// do (Report), every reportEvery.
	Workers string `json:"workers,omitempty"`
	// Lease is how often the run touches its entry while it lives (the
	// entry's revision time, the broker's clock, says when it last did):
	// a worker stops pulling a run silent for leaseLost of them, and the
	// next run on the broker deletes what a dead run without a journal
	// left once it is silent for garbageAfter of them. 0: a flowrun
	// before leases, never judged.
	Lease time.Duration `json:"lease,omitempty"`
	// Journaled says the run keeps a journal: dead, it may be resumed,
	// so its stream is kept.
	Journaled bool `json:"journaled,omitempty"`
	// Server is the id of the broker server the run last touched its
	// entry through. Another id is another server, or the same one
	// restarted: the entry's age may hold time the broker was away, when
	// a live run could not touch it (see collect).
	Server string `json:"server,omitempty"`
}

// StageInfo is where a remote stage's queue and results are.
type StageInfo struct {
	Name     string `json:"name"`
	In       string `json:"in"`  // subject of its input pieces
	Out      string `json:"out"` // subject of their results
	Consumer string `json:"consumer"`
	Results  string `json:"results"` // the run's consumer of Out
	// Tried is where a worker says, before it works each record of a
	// piece alone (a piece delivered again), which one it works:
	// Tried.<the piece's stream sequence> (worker.go, alone).
	Tried string `json:"tried"`
}

// key is the run's key in the runs bucket.
func (i *RunInfo) key() string { return runKey(i.Pipeline, i.Run) }

func runKey(pipeline, run string) string { return token(pipeline) + "." + token(run) }

// newRunInfo names the stream, subjects and consumers of run id of p for
// the remote stages.
func newRunInfo(p *spec.Pipeline, id, version string, remote []spec.Stage) RunInfo {
	info := RunInfo{
		Pipeline: p.Name, Run: id, Version: version, Hash: pipelineHash(p), State: stateActive,
		Stream: "FLOWRUN_" + token(p.Name) + "_" + token(id),
	}
	prefix := "flowrun." + token(p.Name) + "." + token(id)
	info.Workers = prefix + ".workers"
	for _, s := range remote {
		t := stageToken(p, s.Name)
		info.Stages = append(info.Stages, StageInfo{
			Name: s.Name, In: prefix + ".in." + t, Out: prefix + ".out." + t,
			Consumer: "in_" + t, Results: "out_" + t, Tried: prefix + ".tried." + t,
		})
	}
	return info
}

// stageToken names a stage in subjects: its place and its name, in the
// characters a subject token and a consumer name may hold.
func stageToken(p *spec.Pipeline, name string) string {
	for i, s := range p.Stages {
		if s.Name == name {
			return fmt.Sprintf("%d_%s", i+1, token(name))
		}
	}
	return token(name)
}

// token makes s fit for a stream name, a subject token and a key: letters,
// digits, - and _; anything else becomes _.
func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// pipelineHash identifies what a worker must agree on with the run: every
// stage's name, use, options, timeout, retries and on_error, in order.
// Workers (and buffers) are left out: `--set stages.X.workers=8` on a
// bigger machine is the point of a worker.
func pipelineHash(p *spec.Pipeline) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\n", p.Name)
	for _, s := range p.Stages {
		cfg := s.Config
		cfg.Dir, cfg.Log = "", nil // another machine, another directory
		fmt.Fprintf(h, "%q %q %d %#v %q %#v\n", s.Name, s.Use, s.Timeout, s.Retry, s.OnError, cfg)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// NewRunID returns a run id that sorts by time and does not repeat.
func NewRunID() string {
	var b [3]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// remoteStages are the stages of p that run on workers.
func remoteStages(p *spec.Pipeline) []spec.Stage {
	var out []spec.Stage
	for _, s := range p.Stages {
		if runner.IsRemote(s) {
			out = append(out, s)
		}
	}
	return out
}

// compatible says why a worker of version and hash must not work for
// the run info, "" if it may.
func compatible(info RunInfo, version, hash string) string {
	switch {
	case info.Version != version:
		return fmt.Sprintf("the run is another build of flowrun: the run's is %s; this worker's is %s: run workers of the run's build", info.Version, version)
	case info.Hash != hash:
		return fmt.Sprintf("the run's pipeline differs from this worker's (stages hash %s, here %s): give the worker the same pipeline file and --set options as the run (only stages.NAME.workers may differ)", info.Hash, hash)
	}
	return ""
}

// Presence is a worker's entry under its run's key in the runs bucket
// (<run key>.w.<host>.<id>): it joined, with which stages, or it refused.
type Presence struct {
	Host    string   `json:"host"`
	ID      string   `json:"id"` // the worker's (Worker.ID)
	Version string   `json:"version"`
	Stages  []string `json:"stages,omitempty"`
	Refused string   `json:"refused,omitempty"` // why it will not work for the run
}

func presenceKey(info RunInfo, name string) string { return info.key() + ".w." + token(name) }
