// Command gen writes the benchmark workloads' input data to stdout,
// deterministically for a given seed, so that every run of bench/run.sh and
// every machine measures the same bytes.
//
//	go run ./bench/gen -kind lines -n 5000000 -seed 1 > w1.txt
//	go run ./bench/gen -kind json -n 1000000 -seed 1 > w2.jsonl
//	go run ./bench/gen -kind random -n 5000000 -seed 1 > w10.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
)

var words = []string{"alpha", "beta", "gamma", "delta", "echo", "foxtrot", "golf", "hotel"}

var names = []string{"ada", "grace", "linus", "ken", "rob", "barbara", "edsger", "margaret", "donald", "frances"}

var tags = []string{"red", "green", "blue", "new", "old", "hot", "cold"}

func main() {
	kind := flag.String("kind", "lines", "what to generate: lines (W1), json (W2, W9) or random (W10)")
	n := flag.Int("n", 1000, "how many records")
	seed := flag.Uint64("seed", 1, "the seed of the random sequence")
	flag.Parse()
	if err := generate(os.Stdout, *kind, *n, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func generate(w io.Writer, kind string, n int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	bw := bufio.NewWriterSize(w, 1<<16)
	var write func(i int, b []byte) []byte
	switch kind {
	case "lines":
		write = func(i int, b []byte) []byte { return appendLine(b, i, rng) }
	case "json":
		write = func(i int, b []byte) []byte { return appendJSON(b, i, rng) }
	case "random":
		write = func(i int, b []byte) []byte { return appendRandom(b, rng) }
	default:
		return fmt.Errorf("-kind %q: want lines, json or random", kind)
	}
	var b []byte
	for i := range n {
		b = write(i, b[:0])
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// appendLine appends a W1 line: "  rec-000123 alpha beta  ", padded with
// blanks for trim to remove; about one line in ten carries the word drop.
func appendLine(b []byte, i int, rng *rand.Rand) []byte {
	b = append(b, "  rec-"...)
	b = appendPadded(b, i, 6)
	b = append(b, ' ')
	b = append(b, words[rng.IntN(len(words))]...)
	b = append(b, ' ')
	if rng.IntN(10) == 0 {
		b = append(b, "drop"...)
	} else {
		b = append(b, words[rng.IntN(len(words))]...)
	}
	return append(b, "  \n"...)
}

// appendJSON appends a W2 record: {"id","name","score","tags","active"}.
func appendJSON(b []byte, i int, rng *rand.Rand) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"name":"`...)
	b = append(b, names[rng.IntN(len(names))]...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(rng.IntN(1000)), 10)
	b = append(b, `","score":`...)
	b = strconv.AppendFloat(b, float64(rng.IntN(10000))/100, 'f', -1, 64)
	b = append(b, `,"tags":[`...)
	for t := range rng.IntN(4) {
		if t > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, tags[rng.IntN(len(tags))])
	}
	b = append(b, `],"active":`...)
	b = strconv.AppendBool(b, rng.IntN(2) == 0)
	return append(b, "}\n"...)
}

// appendRandom appends a W10 line in no order: "3f9c0a1b77d2e4c8 golf",
// a fifth of them repeating an earlier hex part (so that the sort meets
// equal prefixes).
func appendRandom(b []byte, rng *rand.Rand) []byte {
	v := rng.Uint64()
	if rng.IntN(5) == 0 {
		v &= 0xffff
	}
	b = strconv.AppendUint(b, v, 16)
	b = append(b, ' ')
	b = append(b, words[rng.IntN(len(words))]...)
	return append(b, '\n')
}

func appendPadded(b []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for range width - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}
