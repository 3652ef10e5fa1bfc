package stages_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

// httpLibServer starts a test server on 127.0.0.1 and makes sure, when the
// test ends, that it and every connection to it are gone.
func httpLibServer(t *testing.T) *httptest.Server {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs last
	mux := http.NewServeMux()
	mux.HandleFunc("/hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.PathValue("name"), r.URL.Query().Get("q"))
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.PathValue("code"), &code)
		http.Error(w, "no such\nthing", code)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1000)))
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for range 10 {
			w.Write([]byte(strings.Repeat("y", 100)))
			w.(http.Flusher).Flush() // no Content-Length: the limit must hold while reading
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.Header.Get("Content-Type"), r.Header.Get("X-Token"), b)
	})
	mux.HandleFunc("/img/cat.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write([]byte("\x89PNG\r\n\x1a\nfake"))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/page/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.PathValue("code"), &code)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(code)
		fmt.Fprintf(w, "<!DOCTYPE html><html><head><title>x</title><style>body{color:red}</style></head><body>\n<h1>Down for maintenance &amp; back soon</h1>%s</body></html>", strings.Repeat("<p>more text</p>\n", 500))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPGet(t *testing.T) {
	srv := httpLibServer(t)
	cases := []libbCase{
		{name: "record is the URL", rec: srv.URL + "/hello/ann?q=1\r", want: []string{"hello ann 1"}},
		{name: "template over fields", with: map[string]any{"url_template": srv.URL + "/hello/{{.name | pathescape}}?q={{.q | urlquery}}"},
			rec: `{"name":"a b","q":"x&y"}`, want: []string{"hello a b x&y"}},
		{name: "template over text", with: map[string]any{"url_template": srv.URL + "/hello/{{.}}"}, rec: "bob", want: []string{"hello bob "}},
		{name: "raw", with: map[string]any{"url_template": srv.URL + "/hello/x?q={{raw | urlquery}}"}, rec: `{"a":1}`, want: []string{`hello x {"a":1}`}},
		{name: "headers", with: map[string]any{"url_template": srv.URL + "/echo", "headers": map[string]string{"X-Token": "t0k"}}, rec: "x", want: []string{"GET  t0k "}},
		{name: "body at max", with: map[string]any{"max_body": 1000}, rec: srv.URL + "/big", want: []string{strings.Repeat("x", 1000)}},
		{name: "404 permanent", rec: srv.URL + "/status/404", wantErr: "404 Not Found: no such thing"},
		{name: "body over max", with: map[string]any{"max_body": 999}, rec: srv.URL + "/big", wantErr: "more than max_body 999"},
		{name: "streamed body over max", with: map[string]any{"max_body": 999}, rec: srv.URL + "/stream", wantErr: "more than 999 bytes"},
		{name: "not http", rec: "ftp://example.com/x", wantErr: "not an http or https URL"},
		{name: "not a URL", rec: "hello", wantErr: "not an http or https URL"},
		{name: "missing field", with: map[string]any{"url_template": srv.URL + "/hello/{{.nope}}"}, rec: `{"name":"a"}`, wantErr: "nope"},
	}
	libbRunCases(t, "http.get", cases)

	for _, code := range []int{408, 429, 500, 503} {
		t.Run(fmt.Sprint(code, " retryable"), func(t *testing.T) {
			_, err := libbRun(libbStage(t, "http.get", nil), fmt.Sprintf("%s/status/%d", srv.URL, code))
			if err == nil || errors.Is(err, stages.ErrPermanent) || !strings.Contains(err.Error(), fmt.Sprint(code)) {
				t.Fatalf("error %v, want a retryable one with status %d", err, code)
			}
		})
	}

	t.Run("emit json", func(t *testing.T) {
		got, err := libbRun(libbStage(t, "http.get", map[string]any{"emit": "json"}), srv.URL+"/img/cat.png")
		if err != nil {
			t.Fatal(err)
		}
		var blob struct {
			URL, Name   string
			ContentType string `json:"content_type"`
			Status      int
			Data        string `json:"data_base64"`
		}
		if err := json.Unmarshal([]byte(got[0]), &blob); err != nil {
			t.Fatal(err)
		}
		data, _ := base64.StdEncoding.DecodeString(blob.Data)
		if blob.Name != "cat.png" || blob.URL != srv.URL+"/img/cat.png" || blob.Status != 200 || blob.ContentType != "image/png" || string(data) != "\x89PNG\r\n\x1a\nfake" {
			t.Errorf("blob %s", got[0])
		}
	})

	t.Run("timeout", func(t *testing.T) {
		st := libbStage(t, "http.get", map[string]any{"timeout": 50 * time.Millisecond})
		_, err := libbRun(st, srv.URL+"/slow")
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, stages.ErrPermanent) {
			t.Fatalf("error %v, want a retryable deadline", err)
		}
		// Said as the option, not as Go's "context deadline exceeded".
		if want := "GET " + srv.URL + "/slow: timeout 50ms reached"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want one starting %q", err, want)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		st := libbStage(t, "http.get", nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := st.Process(ctx, []byte(srv.URL+"/hello/x"), nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	})
}

func TestHTTPPost(t *testing.T) {
	srv := httpLibServer(t)
	url := map[string]any{"url_template": srv.URL + "/echo"}
	libbRunCases(t, "http.post", []libbCase{
		{name: "json", with: url, rec: `{"a":1}`, want: []string{`POST application/json  {"a":1}`}},
		{name: "text", with: url, rec: `plain`, want: []string{`POST text/plain; charset=utf-8  plain`}},
		{name: "content type", with: map[string]any{"url_template": srv.URL + "/echo", "content_type": "text/csv"}, rec: `a,b`, want: []string{`POST text/csv  a,b`}},
		{name: "header wins", with: map[string]any{"url_template": srv.URL + "/echo", "headers": map[string]string{"Content-Type": "x/y"}}, rec: `1`, want: []string{`POST x/y  1`}},
		{name: "400", with: map[string]any{"url_template": srv.URL + "/status/400"}, rec: `1`, wantErr: "400 Bad Request"},
	})
}

func TestHTTPOptionErrors(t *testing.T) {
	cases := []struct {
		stage, option string
		with          map[string]any
	}{
		{"http.get", "url_template", map[string]any{"url_template": "{{.a"}},
		{"http.get", "max_body", map[string]any{"max_body": 0}},
		{"http.post", "headers", map[string]any{"headers": map[string]string{"Bad Name": "x"}}},
		{"http.get", "emit", map[string]any{"emit": "xml"}},
	}
	for _, tc := range cases {
		t.Run(tc.stage+"/"+tc.option, func(t *testing.T) {
			_, err := libbNewStage(tc.stage, tc.with)
			var oe *stages.OptionError
			if !errors.As(err, &oe) || oe.Option != tc.option {
				t.Fatalf("error %v, want an *OptionError for %s", err, tc.option)
			}
		})
	}
}

// TestHTTPRedirectHeaders checks that the pipeline's headers never reach
// another origin through a redirect, and the redirects option. The two
// servers listen on different ports of 127.0.0.1: different origins.
func TestHTTPRedirectHeaders(t *testing.T) {
	other := httpLibServer(t)
	srv := httpLibServer(t)
	redirect := func(to string) string { return srv.URL + "/redirect?to=" + url.QueryEscape(to) }
	headers := map[string]string{"X-Token": "secret", "Authorization": "Bearer secret"}
	cases := []libbCase{
		{name: "same origin keeps headers", with: map[string]any{"headers": headers}, rec: redirect(srv.URL + "/echo"), want: []string{"GET  secret "}},
		{name: "other port drops headers", with: map[string]any{"headers": headers}, rec: redirect(other.URL + "/echo"), want: []string{"GET   "}},
		{name: "other host drops headers", with: map[string]any{"headers": headers}, rec: redirect(strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/echo"), want: []string{"GET   "}},
		{name: "same_host follows same origin", with: map[string]any{"headers": headers, "redirects": "same_host"}, rec: redirect(srv.URL + "/echo"), want: []string{"GET  secret "}},
		{name: "same_host refuses another", with: map[string]any{"headers": headers, "redirects": "same_host"}, rec: redirect(other.URL + "/echo"), wantErr: "not followed: redirects is same_host"},
		{name: "none refuses", with: map[string]any{"redirects": "none"}, rec: redirect(srv.URL + "/echo"), wantErr: "not followed: redirects is none"},
	}
	libbRunCases(t, "http.get", cases)
}

// TestHTTPErrorDetails checks what a failed response tells a dead letter:
// the status as a field, a short excerpt of the text of an HTML error
// page, and the wait a Retry-After asked for.
func TestHTTPErrorDetails(t *testing.T) {
	srv := httpLibServer(t)
	_, err := libbRun(libbStage(t, "http.get", nil), srv.URL+"/page/503")
	var he *stages.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("error %v (%T), want an *stages.HTTPError", err, err)
	}
	if he.Status != 503 || he.Fields()["status"] != 503 {
		t.Errorf("status %d, fields %v; want 503", he.Status, he.Fields())
	}
	if !strings.HasPrefix(he.Body, "Down for maintenance & back soon") || len(he.Body) > 210 || strings.Contains(he.Body, "<") || strings.Contains(he.Body, "color") {
		t.Errorf("body excerpt %q, want the page's text, short, without tags or style", he.Body)
	}
	if he.RetryAfter() != 7*time.Second {
		t.Errorf("RetryAfter %v, want 7s", he.RetryAfter())
	}
	if strings.Count(err.Error(), "\n") > 0 || len(err.Error()) > 400 {
		t.Errorf("message %q, want one short line", err)
	}
}

// TestHTTPNetworkErrorText: a network error reads as the stage's other
// errors do, "GET URL: why", not as Go's `Get "URL": why`, and stays one
// that another attempt may cure.
func TestHTTPNetworkErrorText(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = libbRun(libbStage(t, "http.get", nil), "http://"+addr+"/x")
	if want := "GET http://" + addr + "/x: dial tcp " + addr + ": "; err == nil || !strings.HasPrefix(err.Error(), want) || errors.Is(err, stages.ErrPermanent) {
		t.Errorf("error %v, want a retryable one starting %q", err, want)
	}
}
