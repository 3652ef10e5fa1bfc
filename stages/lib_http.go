package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"
)

func init() {
	Register(Spec{
		Name: "http.get",
		Doc: "Fetches a URL made from each record (by default the record is the URL) and emits the response body; " +
			"a status of 400 or more is an error, permanent for a 4xx other than 408 and 429.",
		Options: httpOptions(false),
		Check:   func(c Config) error { _, err := newHTTPStage(c, http.MethodGet); return err },
		New:     func(c Config) (Stage, error) { return newHTTPStage(c, http.MethodGet) },
	})
	Register(Spec{
		Name:    "http.post",
		Doc:     "Posts each record as the body of a request to a URL made from it and emits the response body; errors as http.get.",
		Options: httpOptions(true),
		Check:   func(c Config) error { _, err := newHTTPStage(c, http.MethodPost); return err },
		New:     func(c Config) (Stage, error) { return newHTTPStage(c, http.MethodPost) },
	})
}

func httpOptions(post bool) []Option {
	opts := []Option{
		{Name: "url_template", Type: String, Default: "{{.}}", Doc: "the URL, a Go text/template: dot is the record's text, " +
			"or for a JSON object record its fields ({{.id}}); {{raw}} is always the record's text; urlquery and pathescape escape"},
		{Name: "headers", Type: StringMap, Doc: "request headers, like {Authorization: \"Bearer ${TOKEN}\"} (quoted: in {...} YAML reads the { of ${ as a brace)"},
		{Name: "timeout", Type: Duration, Default: 30 * time.Second, Doc: "the longest a request may take, body included; 0: no limit but the stage's timeout"},
		{Name: "max_body", Type: Int, Default: 64 << 20, Doc: "the largest response body, in bytes; a larger one is an error for its record, and reading stops there: a worker never holds more"},
		{Name: "redirects", Type: String, Default: "follow", Enum: []string{"follow", "same_host", "none"}, Doc: "follow: up to 10 redirects, " +
			"dropping the pipeline's headers on any that changes the scheme, host or port; same_host: only redirects to the same scheme, host and port; " +
			"none: a redirect is an error for its record"},
		{Name: "emit", Type: String, Default: "body", Enum: []string{"body", "json"}, Doc: "body: the response body; " +
			"json: a blob record {url, name (the URL's base name), status, content_type, data_base64} that image.resize and file.write understand"},
	}
	if post {
		opts = append(opts, Option{Name: "content_type", Type: String, Default: "", Doc: "the request's Content-Type; empty: application/json for a JSON record, else sniffed"})
	}
	return opts
}

// httpTransport is shared by the workers of every http stage, so that they
// reuse connections: the default transport keeps only two idle ones per
// host, which makes eight workers on one host dial again and again.
var httpTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	return t
}()

type httpStage struct {
	method      string
	url         *template.Template // nil: the record is the URL
	headers     map[string]string
	timeout     time.Duration
	max         int64
	emitJSON    bool
	contentType string
	redirects   string
	client      http.Client
	raw         []byte   // the record at hand, for the template's raw function
	spare       [][]byte // for readLimited
}

func newHTTPStage(c Config, method string) (*httpStage, error) {
	s := &httpStage{
		method:    method,
		headers:   c.Map("headers"),
		timeout:   c.Duration("timeout"),
		max:       int64(c.Int("max_body")),
		emitJSON:  c.String("emit") == "json",
		redirects: c.String("redirects"),
	}
	s.client = http.Client{Transport: httpTransport, CheckRedirect: s.checkRedirect}
	if s.max < 1 {
		return nil, OptionErrorf("max_body", "must be at least 1 byte, not %d", s.max)
	}
	for name, value := range s.headers {
		if !validHeaderName(name) {
			return nil, OptionErrorf("headers", "%q is not a header name", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return nil, OptionErrorf("headers", "the value of %s holds a line break or NUL", name)
		}
	}
	if method == http.MethodPost {
		s.contentType = c.String("content_type")
	}
	if text := c.String("url_template"); text != "{{.}}" {
		t, err := template.New("url_template").
			Option("missingkey=error").
			Funcs(template.FuncMap{"raw": func() string { return string(s.raw) }, "pathescape": url.PathEscape}).
			Parse(text)
		if err != nil {
			return nil, &OptionError{Option: "url_template", Err: err}
		}
		s.url = t
	}
	return s, nil
}

// target returns the URL for rec.
func (s *httpStage) target(rec []byte) (*url.URL, error) {
	text := string(bytes.TrimSpace(rec))
	if s.url != nil {
		s.raw = rec
		defer func() { s.raw = nil }()
		var dot any = text
		if isJSONObject(rec) {
			var fields map[string]any
			d := json.NewDecoder(bytes.NewReader(rec))
			d.UseNumber()
			if err := d.Decode(&fields); err != nil {
				return nil, fmt.Errorf("url_template: decode JSON: %w", err)
			}
			dot = fields
		}
		var b strings.Builder
		if err := s.url.Execute(&b, dot); err != nil {
			return nil, err
		}
		text = strings.TrimSpace(b.String())
	}
	u, err := url.Parse(text)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http or https URL", text)
	}
	return u, nil
}

func (s *httpStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	u, err := s.target(rec)
	if err != nil {
		return out, Permanent(err)
	}
	var timedOut error
	if s.timeout > 0 {
		var cancel context.CancelFunc
		timedOut = fmt.Errorf("%s %s: timeout %v reached", s.method, u.Redacted(), s.timeout)
		ctx, cancel = context.WithTimeoutCause(ctx, s.timeout, timedOut)
		defer cancel()
	}
	// The request's own timeout is said as the option, not as Go's
	// "context deadline exceeded"; the error still wraps that.
	said := func(err error, what string) error {
		if timedOut != nil && context.Cause(ctx) == timedOut {
			return &fileText{timedOut.Error() + what, fmt.Errorf("%w: %w", context.DeadlineExceeded, err)}
		}
		return err
	}
	var body io.Reader
	if s.method == http.MethodPost {
		// The transport may read the body after Do returns; rec is only
		// the stage's until Process returns.
		body = bytes.NewReader(bytes.Clone(rec))
	}
	req, err := http.NewRequestWithContext(ctx, s.method, u.String(), body)
	if err != nil {
		return out, Permanent(err)
	}
	for name, value := range s.headers {
		req.Header.Set(name, value)
	}
	if s.method == http.MethodPost && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", s.postType(rec))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var redirect *errRedirect
		if errors.As(err, &redirect) {
			return out, Permanent(redirect)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			// Go's `Get "http://…": …`, as this stage's other errors say it.
			err = fmt.Errorf("%s %s: %w", s.method, u.Redacted(), ue.Err)
		}
		return out, said(err, " before a response") // the network, or ctx: another attempt may do better
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return out, httpStatusError(s.method, u, resp)
	}
	if resp.ContentLength > s.max {
		return out, Permanent(fmt.Errorf("%s %s: body of %d bytes is more than max_body %d", s.method, u.Redacted(), resp.ContentLength, s.max))
	}
	data, err := readLimited(resp.Body, s.max, resp.ContentLength, &s.spare)
	if err != nil {
		return out, said(fmt.Errorf("%s %s: read body: %w", s.method, u.Redacted(), err), " while reading the body")
	}
	if !s.emitJSON {
		return append(out, data), nil
	}
	blob, err := encodeBlob(map[string]any{
		"url":          u.String(),
		"name":         urlBaseName(u),
		"status":       resp.StatusCode,
		"content_type": resp.Header.Get("Content-Type"),
	}, data)
	if err != nil {
		return out, Permanent(err)
	}
	return append(out, blob), nil
}

// checkRedirect applies the redirects option to a redirect to req, after
// the requests via. net/http copies the first request's headers onto the
// next, but for Authorization and Cookie to another domain: the pipeline's
// headers (an X-Api-Key) would reach any host a server redirects to. So
// they are dropped from every request whose scheme, host or port is not
// the first request's.
func (s *httpStage) checkRedirect(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	same := sameOrigin(req.URL, first)
	switch {
	case s.redirects == "none":
		return &errRedirect{to: req.URL, why: "redirects is none"}
	case s.redirects == "same_host" && !same:
		return &errRedirect{to: req.URL, why: "redirects is same_host"}
	case len(via) >= 10:
		return &errRedirect{to: req.URL, why: "after 10 redirects"}
	}
	if !same {
		for name := range s.headers {
			req.Header.Del(name)
		}
	}
	return nil
}

// errRedirect is a redirect that the redirects option refuses.
type errRedirect struct {
	to  *url.URL
	why string
}

func (e *errRedirect) Error() string {
	return fmt.Sprintf("redirected to %s, not followed: %s", e.to.Redacted(), e.why)
}

// sameOrigin reports whether a and b have the same scheme, host and port,
// the port defaulting by the scheme.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && urlPort(a) == urlPort(b)
}

func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

func (s *httpStage) postType(rec []byte) string {
	switch {
	case s.contentType != "":
		return s.contentType
	case json.Valid(rec):
		return "application/json"
	}
	return http.DetectContentType(rec)
}

// HTTPError is a response whose status is 400 or more. A dead letter
// can carry its Status as a field and its Body, a short excerpt of the
// text the server sent; RetryAfter is how long the server asked the
// client to wait before it tries again (a 429 or 503 with Retry-After).
type HTTPError struct {
	Method string
	URL    string // redacted: no password
	Status int
	Reason string // the status line's text, "503 Service Unavailable"
	Body   string // at most httpExcerpt bytes of the body's text
	After  time.Duration
}

// httpExcerpt bounds HTTPError.Body: a server's error page is often a
// whole HTML document, and the message is one line of a dead letter.
const httpExcerpt = 200

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Method, e.URL, e.Reason)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// RetryAfter returns the wait the server asked for with Retry-After, or 0.
func (e *HTTPError) RetryAfter() time.Duration { return e.After }

// Fields returns what a dead letter should carry beside the message.
func (e *HTTPError) Fields() map[string]any {
	f := map[string]any{"status": e.Status}
	if e.Body != "" {
		f["body"] = e.Body
	}
	return f
}

// httpStatusError describes a failed response, with the start of its body,
// which is where servers say why. A 4xx is permanent but for 408 Request
// Timeout and 429 Too Many Requests: another attempt can succeed.
func httpStatusError(method string, u *url.URL, resp *http.Response) error {
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	// Read a little further so that the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	e := &HTTPError{Method: method, URL: u.Redacted(), Status: resp.StatusCode, Reason: resp.Status,
		Body: bodyExcerpt(head, resp.Header.Get("Content-Type")), After: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	code := resp.StatusCode
	if code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests {
		return Permanent(e)
	}
	return e
}

var (
	htmlSkipped = regexp.MustCompile(`(?is)<(script|style|head)\b.*?</(script|style|head)\s*>|<!--.*?-->`)
	htmlTag     = regexp.MustCompile(`(?s)<[^>]*>`)
)

// bodyExcerpt is the start of an error body as one line of text: an HTML
// page's text without its tags, at most httpExcerpt bytes, cut at a
// character; "" for a body that is not text.
func bodyExcerpt(body []byte, contentType string) string {
	if bytes.IndexByte(body, 0) >= 0 {
		return "" // binary
	}
	text := strings.ToValidUTF8(string(body), "")
	if strings.Contains(strings.ToLower(contentType), "html") || strings.HasPrefix(strings.TrimSpace(strings.ToLower(text)), "<!doctype html") {
		text = htmlTag.ReplaceAllString(htmlSkipped.ReplaceAllString(text, " "), " ")
		text = html.UnescapeString(text)
	}
	text = strings.Join(strings.Fields(text), " ")
	if len(text) > httpExcerpt {
		cut := httpExcerpt
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	return text
}

// retryAfter parses a Retry-After header, seconds or an HTTP date, into
// the wait from now; 0 when absent, unparsable or past.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		// delay-seconds is 1*DIGIT: one past int64 is still a long wait.
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(24*time.Hour/time.Second) {
			return 24 * time.Hour
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// urlBaseName is the last element of u's path, or "" when it names no
// file ("/", "..").
func urlBaseName(u *url.URL) string {
	base := path.Base(u.Path)
	if base == "/" || base == "." || base == ".." {
		return ""
	}
	return base
}

// Close lets go of idle connections, so that a finished pipeline leaves no
// goroutines behind; the workers of a stage still running just dial again.
func (s *httpStage) Close() error {
	httpTransport.CloseIdleConnections()
	return nil
}

// validHeaderName reports whether name is an HTTP token (RFC 9110), the
// only names net/http will send.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}
