package cli

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/transport"
)

// brokerOptions are the flags of run and worker about the broker.
type brokerOptions struct {
	broker         string // --broker: URL or "embedded"
	noLocalWorkers bool
	runID          string
	ackWait        time.Duration
	maxDeliver     int
	lease          time.Duration         // --broker-lease (hidden, for tests)
	dial           transport.DialOptions // --broker-creds, --broker-tls-ca, …
}

// broker is a connection to the broker a run or a worker uses, and the
// server when it is embedded.
type broker struct {
	nc    *nats.Conn
	embed *transport.Server
	store string // the embedded server's own store, kept for --resume
}

// dialBroker connects to the broker the --broker value names; "embedded"
// starts one in the process, on loopback, with its store in store (""
// a temporary directory). A broker that cannot be reached is a usage mistake (exit 2)
// that names it and says why.
func dialBroker(ctx context.Context, url, store string, dial transport.DialOptions, log io.Writer) (*broker, error) {
	b := &broker{}
	if url == "embedded" {
		s, err := transport.StartEmbedded(ctx, transport.EmbeddedOptions{Log: log, StoreDir: store})
		if err != nil {
			return nil, usagef("--broker embedded: %v", err)
		}
		b.embed = s
		url = s.URL()
	}
	dial.Name, dial.Log = "flowrun "+transport.Host(), log
	nc, err := transport.Dial(ctx, url, dial)
	if err != nil {
		b.close()
		return nil, usagef("%v", err)
	}
	b.nc = nc
	return b, nil
}

func (b *broker) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.embed != nil {
		b.embed.Shutdown()
	}
}

// brokerRun prepares the run of p on the broker; the caller closes it
// after the run.
func brokerRun(ctx context.Context, p *spec.Pipeline, o brokerOptions, journal string, resume bool, stderr io.Writer) (*broker, *transport.Run, error) {
	store := ""
	if journal != "" {
		store = journal + ".broker" // the queues outlive the process, for --resume
	}
	b, err := dialBroker(ctx, o.broker, store, o.dial, stderr)
	if err != nil {
		return nil, nil, err
	}
	if b.embed != nil {
		b.store = store
		// Workers on this machine may join it too: say where it is.
		fmt.Fprintf(stderr, "flowrun: embedded broker at %s, for workers on this machine\n", b.embed.URL())
	}
	id, fresh := o.runID, false
	if id == "" && journal != "" {
		// A journaled run's id comes from its journal, so that --resume
		// finds the stream the run left; a start afresh replaces it.
		abs, _ := filepath.Abs(journal)
		sum := sha256.Sum256([]byte(abs))
		id, fresh = "j"+hex.EncodeToString(sum[:6]), !resume
	}
	run, err := transport.NewRun(b.nc, p, transport.RunOptions{
		RunID: id, Version: transportVersion(), AckWait: o.ackWait, MaxDeliver: o.maxDeliver,
		LocalWorkers: !o.noLocalWorkers, Log: stderr, Resume: resume, Fresh: fresh,
		Journaled: journal != "", Lease: o.lease,
	})
	if err != nil {
		b.close()
		return nil, nil, usagef("--broker: %v", err)
	}
	return b, run, nil
}

// transportVersion is what workers and runs must agree on: flowrun's
// version and the revision it was built from; for a build of uncommitted
// changes or of no known revision, also what names the executable's
// content, since two such builds of different code have the same version
// and revision. Worked out once, when first asked.
var transportVersion = sync.OnceValue(func() string {
	bi, _ := debug.ReadBuildInfo()
	return buildIdentity(bi, executableHash)
})

// buildIdentity is transportVersion for the build information bi, with
// exeHash naming the executable's content when it is needed.
func buildIdentity(bi *debug.BuildInfo, exeHash func() string) string {
	lines := strings.SplitN(formatVersion(bi), "\n", 3)
	id := strings.TrimPrefix(lines[0], "flowrun ") + ", " + lines[1]
	clean := false
	if bi != nil {
		for _, s := range bi.Settings {
			if s.Key == "vcs.modified" {
				clean = s.Value == "false"
			}
		}
	}
	if !clean {
		id += ", executable " + exeHash()
	}
	return id
}

// executableHash names the content of the running executable: by the
// hash of it the Go linker wrote into it (the last part of its Go build
// ID), else by the start of its SHA-256, or says why it could not be read
// (then two builds compare by it: equal only if both failed alike). The
// linker's hash is read from a few headers; the SHA-256 of flowrun's
// 58 MB took 40 ms of a core on an idle 2-core machine and 100 to 160 ms
// on a loaded one, before each run on a broker could start
// (bench/scaleout.sh: most of what a short run on a broker costs more).
func executableHash() string {
	path, err := os.Executable()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	if id := goBuildContentID(path); id != "" {
		return "build " + id
	}
	f, err := os.Open(path)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return "sha256 " + hex.EncodeToString(h.Sum(nil))[:16]
}

// goBuildContentID is the hash of an ELF executable's content that the Go
// linker wrote into its .note.go.buildid note (the last of the build ID's
// parts, as `go tool buildid` prints it); "" when it has none (another
// object format, or built with -buildid= of nothing).
func goBuildContentID(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return ""
	}
	b, err := s.Data()
	if err != nil || len(b) < 16 {
		return ""
	}
	// An ELF note: name size, description size, type, the name ("Go",
	// padded to 4 bytes), the description (the build ID).
	bo := f.ByteOrder
	namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
	start := 12 + uint64(namesz+3)&^3
	if typ != 4 || namesz != 3 && namesz != 4 || string(b[12:14]) != "Go" || start+uint64(descsz) > uint64(len(b)) {
		return ""
	}
	id := string(b[start : start+uint64(descsz)])
	return id[strings.LastIndexByte(id, '/')+1:]
}

var _ runner.Remote = (*transport.Run)(nil)

func closeRun(run *transport.Run, b *broker, keep bool, stderr io.Writer) {
	if keep && run.Lost() {
		keep = false // nothing of it is left on the broker: the error said so
	}
	if keep {
		run.KeepStream()
		fmt.Fprintf(stderr, "flowrun: run %s stays on the broker (stream %s) for --resume\n", run.ID(), run.Stream())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := run.Close(ctx); err != nil {
		fmt.Fprintf(stderr, "flowrun: %v\n", err)
	}
	b.close()
	if !keep && b.store != "" {
		os.RemoveAll(b.store) // the run is over: nothing to resume
	}
}
