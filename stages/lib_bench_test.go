package stages_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"testing"
)

// BenchmarkStage measures one Process call of each stage of part A on a
// JSON record of about 100 bytes, copied into the stage's buffer each time
// as the runner does.
func BenchmarkStage(b *testing.B) {
	const n = 4096 // distinct records, so that dedupe sees new ones
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = fmt.Appendf(nil, `{"id":%d,"name":"user %d","email":"user%d@example.com","score":%d,"active":true}`, i, i, i, i%100)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(recs[0])
	zw.Close()
	batch := []byte(`[` + string(bytes.Join(recs[:10], []byte(","))) + `]`)
	benchmarks := []struct {
		name  string
		stage string
		with  map[string]any
		rec   []byte // nil: the varied JSON records
	}{
		{"split", "split", nil, nil},
		{"split/regex", "split", map[string]any{"sep": `[,:]`, "regex": true}, nil},
		{"template", "template", map[string]any{"template": "{{.name}} <{{.email}}>"}, nil},
		{"truncate", "truncate", map[string]any{"max": 40, "ellipsis": "…"}, nil},
		{"dedupe", "dedupe", nil, nil},
		{"dedupe/key", "dedupe", map[string]any{"key": "id"}, nil},
		{"take", "take", map[string]any{"n": 1 << 62}, nil},
		{"sample", "sample", map[string]any{"rate": 0.5, "seed": 1}, nil},
		{"base64.encode", "base64.encode", nil, nil},
		{"base64.decode", "base64.decode", nil, []byte(base64.StdEncoding.EncodeToString(recs[0]))},
		{"hash/sha256", "hash", nil, nil},
		{"hash/xxh64", "hash", map[string]any{"algo": "xxh64"}, nil},
		{"hash/md5_field", "hash", map[string]any{"algo": "md5", "field": "md5"}, nil},
		{"gzip/level1", "gzip", map[string]any{"level": 1}, nil},
		{"gunzip", "gunzip", nil, z.Bytes()},
		{"batch", "batch", nil, nil},
		{"unbatch", "unbatch", nil, batch},
		{"rate_limit", "rate_limit", map[string]any{"per_second": 1e9, "burst": 1 << 30}, nil},
		{"count", "count", nil, nil},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			st := libNew(b, bm.stage, bm.with)
			ctx := context.Background()
			buf := make([]byte, 0, 512)
			var out [][]byte
			var err error
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				rec := bm.rec
				if rec == nil {
					rec = recs[i%n]
				}
				buf = append(buf[:0], rec...)
				out, err = st.Process(ctx, buf, out[:0])
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
