package spec_test

import (
	"strings"
	"testing"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/internal/size"
	"github.com/flowrun/flowrun/spec"
)

// TestFileConnector: the formats spec accepts are the file connector's,
// its defaults are spec's, and a file:// URL in from: or to: is its path.
func TestFileConnector(t *testing.T) {
	sp, ok := connect.Lookup(file.Scheme)
	if !ok {
		t.Fatal("no file connector registered")
	}
	format, _ := sp.Option("format")
	if strings.Join(format.Enum, ",") != strings.Join(spec.Formats, ",") || format.Default != spec.DefaultFormat {
		t.Errorf("file connector formats %v (default %s), spec's %v (%s)", format.Enum, format.Default, spec.Formats, spec.DefaultFormat)
	}
	if got := strings.Join(spec.OutputFormats, ","); got != "lines,jsonl,csv,tsv" {
		t.Errorf("output formats %s", got)
	}
	max, _ := sp.Option("max_record_size")
	if n, err := size.Parse(max.Default); err != nil || n != spec.DefaultMaxRecordSize {
		t.Errorf("file connector max_record_size default %s, spec's %d", max.Default, spec.DefaultMaxRecordSize)
	}

	p, err := spec.Parse("p.yaml", []byte("input: {from: 'file:///data/in%20put.csv', format: csv}\noutput: {to: 'file://localhost/data/out.jsonl'}\nstages: [{use: trim}]\n"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Input.From != "/data/in put.csv" || p.Output.To != "/data/out.jsonl" {
		t.Errorf("from %q, to %q: want the URLs' paths", p.Input.From, p.Output.To)
	}
	_, err = spec.Parse("p.yaml", []byte("input: {from: 'file://elsewhere/x'}\nstages: [{use: trim}]\n"), spec.Options{})
	if want := "p.yaml:1:15: from: file://elsewhere/x: a file URL names a local file (file:///PATH), not one on elsewhere"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a file URL on another host: %v, want %s", err, want)
	}
}
