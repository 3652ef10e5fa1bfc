package stages_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/stages"
)

func textRun(t testing.TB, name, rec string) string {
	t.Helper()
	spec, _ := stages.Lookup(name)
	cfg, err := stages.NewConfig(spec, name, ".", nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Process(context.Background(), []byte(rec), nil)
	if err != nil || len(out) != 1 {
		t.Fatalf("%s(%q): %q, %v", name, rec, out, err)
	}
	return string(out[0])
}

// TestCase checks upper and lower against the standard library on every
// length around the eight-byte words and on each ASCII byte.
func TestCase(t *testing.T) {
	var all strings.Builder
	for c := 0; c < 0x80; c++ {
		all.WriteByte(byte(c))
	}
	inputs := []string{"", "a", "Hello, World!", "@[`{", all.String(), "mixed ÄÖü straße", "ascii first then é", "é then ascii text"}
	for n := 0; n < 20; n++ {
		inputs = append(inputs, strings.Repeat("aZ@[`{", 4)[:n])
	}
	for _, in := range inputs {
		if got, want := textRun(t, "upper", in), string(bytes.ToUpper([]byte(in))); got != want {
			t.Errorf("upper(%q) = %q, want %q", in, got, want)
		}
		if got, want := textRun(t, "lower", in), string(bytes.ToLower([]byte(in))); got != want {
			t.Errorf("lower(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkCase(b *testing.B) {
	spec, _ := stages.Lookup("upper")
	cfg, _ := stages.NewConfig(spec, "upper", ".", nil)
	s, _ := spec.New(cfg)
	m := s.(stages.Mapper)
	rec := []byte("  rec-000123 alpha beta  ")
	buf := make([]byte, len(rec))
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		copy(buf, rec)
		m.Map(buf)
	}
}
