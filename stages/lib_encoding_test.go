package stages_test

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/stages"
)

func TestLibEncodingStages(t *testing.T) {
	tests := []libCase{
		{"base64 encode", "base64.encode", nil, []string{"hello", "", "\xfb\xff"}, []string{"aGVsbG8=", "", "+/8="}},
		{"base64 encode url", "base64.encode", map[string]any{"url": true}, []string{"\xfb\xff"}, []string{"-_8="}},
		{"base64 decode padded or not", "base64.decode", nil, []string{"aGVsbG8=", "aGVsbG8", "+/8=", ""}, []string{"hello", "hello", "\xfb\xff", ""}},
		{"base64 decode url", "base64.decode", map[string]any{"url": true}, []string{"-_8", "-_8="}, []string{"\xfb\xff", "\xfb\xff"}},

		{"hash sha256", "hash", nil, []string{"abc"}, []string{"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}},
		{"hash sha256 long record", "hash", nil, []string{strings.Repeat("abc", 40)}, []string{libSHA256(strings.Repeat("abc", 40))}},
		{"hash sha1", "hash", map[string]any{"algo": "sha1"}, []string{"abc"}, []string{"a9993e364706816aba3e25717850c26c9cd0d89d"}},
		{"hash md5", "hash", map[string]any{"algo": "md5"}, []string{"abc", ""}, []string{"900150983cd24fb0d6963f7d28e17f72", "d41d8cd98f00b204e9800998ecf8427e"}},
		{"hash xxh64", "hash", map[string]any{"algo": "xxh64"}, []string{"abc"}, []string{"44bc2cf5ad770999"}},
		{"hash field added", "hash", map[string]any{"algo": "md5", "field": "h"}, []string{`{"a":1}`},
			[]string{`{"a":1,"h":"` + libMD5(`{"a":1}`) + `"}`}},
		{"hash field added to empty object", "hash", map[string]any{"algo": "md5", "field": "h"}, []string{` { } `},
			[]string{` { "h":"` + libMD5(` { } `) + `"} `}},
		{"hash field replaced", "hash", map[string]any{"algo": "md5", "field": "h"}, []string{`{"h": [1, 2], "b":"x"}`},
			[]string{`{"h": "` + libMD5(`{"h": [1, 2], "b":"x"}`) + `", "b":"x"}`}},
		{"hash field nested name ignored", "hash", map[string]any{"algo": "md5", "field": "h"}, []string{`{"o":{"h":1}}`},
			[]string{`{"o":{"h":1},"h":"` + libMD5(`{"o":{"h":1}}`) + `"}`}},
		{"hash field name quoted", "hash", map[string]any{"algo": "md5", "field": `a"b`}, []string{`{}`},
			[]string{`{"a\"b":"` + libMD5(`{}`) + `"}`}},
	}
	libRunCases(t, tests)
}

// libSHA256 and libMD5 are the hex digests of s by the standard library,
// to check the hash stage against.
func libSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func libMD5(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestLibGzipRoundTrip compresses records at several levels, checks each
// is one gzip member any reader can read, and gunzips them back.
func TestLibGzipRoundTrip(t *testing.T) {
	recs := []string{"", "a", strings.Repeat("flowrun ", 10000), "\x00\xff binary \x1f\x8b"}
	for _, level := range []int{-2, -1, 0, 1, 9} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			zipped := libRun(t, libNew(t, "gzip", map[string]any{"level": level}), recs...)
			for i, z := range zipped {
				zr, err := gzip.NewReader(strings.NewReader(z))
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				b, err := io.ReadAll(zr)
				if err != nil || string(b) != recs[i] {
					t.Fatalf("record %d: compress/gzip reads %d bytes (%v), want %d", i, len(b), err, len(recs[i]))
				}
			}
			got := libRun(t, libNew(t, "gunzip", nil), zipped...)
			if !libEqual(got, recs) {
				t.Errorf("gunzip(gzip(records)) differ from the records")
			}
		})
	}
}

// TestLibGunzipMaxSize checks that a record decompressing to more than
// max_size is refused, and one of exactly max_size is not.
func TestLibGunzipMaxSize(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(bytes.Repeat([]byte{'x'}, 1000))
	zw.Close()
	if _, err := libProcess(libNew(t, "gunzip", map[string]any{"max_size": 999}), nil, z.String()); err == nil ||
		!strings.Contains(err.Error(), "more than max_size (999 bytes)") {
		t.Errorf("1000 bytes with max_size 999: error %v, want one about max_size", err)
	}
	got, err := libProcess(libNew(t, "gunzip", map[string]any{"max_size": 1000}), nil, z.String())
	if err != nil || len(got) != 1 || len(got[0]) != 1000 {
		t.Errorf("1000 bytes with max_size 1000: %d records, %v", len(got), err)
	}
}

// TestLibGunzipMessages: a record that is not gzip says how, rather than
// "gunzip: EOF" for an empty record or "gunzip: gzip: invalid header".
func TestLibGunzipMessages(t *testing.T) {
	gz := func(s string) string {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write([]byte(s))
		zw.Close()
		return z.String()
	}
	whole := gz("hello")
	for _, tc := range []struct{ name, rec, want string }{
		{"empty", "", "gunzip: the record is empty, not gzip"},
		{"text", "hello, world", "gunzip: the record is not gzip (it does not start with a gzip header)"},
		{"cut short", whole[:len(whole)-3], "gunzip: the gzip stream is cut short"},
		{"a little garbage after", whole + "garbage", "gunzip: the gzip stream is cut short, or followed by bytes that are not gzip"},
		{"garbage after", whole + "garbage and more garbage", "gunzip: the record goes on after a gzip member with bytes that are not gzip"},
		{"corrupt", whole[:12] + "\xff\xff\xff" + whole[15:], "gunzip: the gzip stream is corrupt"},
	} {
		_, err := libProcess(libNew(t, "gunzip", nil), nil, tc.rec)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, stages.ErrPermanent) {
			t.Errorf("%s: error %v, want a permanent one starting %q", tc.name, err, tc.want)
		}
	}
}
