package observe_test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

var screenshot = flag.String("screenshot", "", "write the live page's screenshot to `FILE` (TestLivePage)")

// chromium finds Debian's headless browser: missing, the test skips, or
// fails when FLOWRUN_REQUIRE_SERVERS=1 says every tool must be there.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FLOWRUN_REQUIRE_SERVERS") == "1" {
		t.Fatal("chromium is not installed (apt-get install chromium), and FLOWRUN_REQUIRE_SERVERS=1")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// openPage opens url in a headless Chromium (bin) of a window 1280 wide
// and height high; close ends the browser.
func openPage(t *testing.T, bin, url string, height int) (ctx context.Context, close func()) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, height), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	close = func() {
		cancel()
		cancelAlloc()
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		close()
		t.Fatalf("open the page: %v", err)
	}
	return ctx, close
}

// pageState is what the test reads off the rendered page.
type pageState struct {
	Title  string   `json:"title"`
	State  string   `json:"state"`
	Stages []string `json:"stages"`
	IO     []string `json:"io"`
	Busy   []string `json:"busy"`
	Queue  []string `json:"queue"`
	Output string   `json:"output"`
	Input  string   `json:"input"`
	Advice string   `json:"advice"`
}

// readPage is run in the page, after its scripts: the DOM as drawn.
const readPage = `(() => {
  const boxes = [...document.querySelectorAll('[data-stage]')];
  const v = (b, k) => { const e = b && b.querySelector('[data-k="' + k + '"]'); return e ? e.textContent : ""; };
  return {
    title: document.getElementById("pipeline").textContent,
    state: document.getElementById("state").textContent,
    stages: boxes.map(b => b.dataset.stage),
    io: boxes.map(b => v(b, "io")),
    busy: boxes.map(b => v(b, "busy")),
    queue: boxes.map(b => v(b, "queue")),
    output: v(document.getElementById("output"), "records"),
    input: v(document.getElementById("input"), "percent"),
    advice: document.getElementById("advice").textContent,
  };
})()`

// TestLivePage opens the page of a running pipeline in headless Chromium
// and reads what its scripts drew: a box per stage in pipeline order, and
// numbers that change while records flow.
func TestLivePage(t *testing.T) {
	bin := chromium(t)
	defer goleak.VerifyNone(t)
	lr := startLive(t, `name: thumbnails
stages:
  - name: fetch
    use: sleep
    workers: 4
    buffer: 8
    with: {duration: 1ms}
  - name: resize
    use: upper
  - name: upload
    use: sleep
    workers: 2
    buffer: 8
    with: {duration: 1ms}
`, "--metrics-linger", "1m")
	lr.feed(t, 0, 50)

	ctx, closePage := openPage(t, bin, "http://"+lr.addr+"/", 560)
	defer closePage()
	read := func() pageState {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](readPage))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		var s pageState
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	var first pageState
	waitFor(t, "the page to show 50 records out", func() bool {
		first = read()
		return first.Output == "50"
	})
	if want := []string{"fetch", "resize", "upload"}; !slices.Equal(first.Stages, want) {
		t.Fatalf("stage boxes %q, want %q", first.Stages, want)
	}
	if first.Title != "thumbnails" || first.State != "running" {
		t.Errorf("header %q %q, want thumbnails running", first.Title, first.State)
	}
	if first.IO[0] != "50 / 50" || first.Busy[0] != "0 / 4" || first.Busy[2] != "0 / 2" || first.Input != "unknown" {
		t.Errorf("page shows %+v", first)
	}

	lr.feed(t, 50, 1200)
	var second pageState
	waitFor(t, "the numbers to change", func() bool {
		second = read()
		return second.IO[2] != first.IO[2] && second.Output != first.Output
	})
	// Keep the records coming for the screenshot: a page with work in
	// flight, busy workers and queues filling.
	path := *screenshot
	if path == "" {
		path = filepath.Join(t.TempDir(), "page.png")
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot in %s; the page read %+v", path, second)

	// After the end of input, --metrics-linger keeps the page up with the
	// final numbers.
	lr.stdin.Close()
	var last pageState
	waitFor(t, "the page to say finished", func() bool {
		last = read()
		return last.State == "finished"
	})
	if last.Output != "1,200" || last.IO[2] != "1,200 / 1,200" {
		t.Errorf("the finished page shows %+v, want 1,200 records through", last)
	}
	closePage()
	lr.cancel() // ends the linger
	if code := lr.wait(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, lr.stderr)
	}
}

// fits is run in the page: it writes the widest numbers a long run
// shows into every box, marks each stage the bottleneck (a thicker
// border), and returns each number that then sticks out of its box.
const fits = `(() => {
  const wide = {io: "12,345,678 / 12,345,678", errors: "1,234,567 (2,345,678 retried)", lat: "20.4ms / 77.6ms",
                queue: "1,024 / 1,024", busy: "128 / 128", records: "12,345,678", rate: "123,456/s"};
  const out = [];
  document.querySelectorAll(".box").forEach((b) => {
    if (b.dataset.stage) b.classList.add("hot");
    b.querySelectorAll("td.v").forEach((v) => { if (wide[v.dataset.k]) v.textContent = wide[v.dataset.k]; });
  });
  document.querySelectorAll(".box").forEach((b) => {
    const inner = b.getBoundingClientRect().right - parseFloat(getComputedStyle(b).borderRightWidth);
    b.querySelectorAll("td.v").forEach((v) => {
      if (v.getBoundingClientRect().right > inner + 0.5) out.push((b.dataset.stage || b.id) + " " + v.dataset.k + " " + v.textContent);
    });
  });
  return out;
})()`

// TestPageNumbersFitTheirBoxes: the numbers of a long run (millions of
// records, errors with retries, the bottleneck's thicker border) stay
// inside their boxes, and a long stage name is cut with its whole
// text in its title.
func TestPageNumbersFitTheirBoxes(t *testing.T) {
	bin := chromium(t)
	defer goleak.VerifyNone(t)
	long := "resize_the_images_to_thumbnails_and_previews"
	lr := startLive(t, "name: wide\nstages:\n  - {name: fetch, use: upper}\n  - {name: "+long+", use: upper}\n", "--metrics-linger", "1m")
	lr.feed(t, 0, 10)

	ctx, closePage := openPage(t, bin, "http://"+lr.addr+"/", 560)
	defer closePage()
	waitFor(t, "the page to show 10 records out", func() bool {
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#output [data-k="records"]').textContent`))
		return err == nil && out == "10"
	})
	// One evaluation writes and measures, between two polls of the page.
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fits))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 0 {
		t.Errorf("numbers outside their box: %q", out)
	}
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-stage="`+long+`"] .name').title`))
	if err != nil || title != long {
		t.Errorf("the long name's title is %q (%v), want %q", title, err, long)
	}
	closePage()
	lr.stdin.Close()
	waitFor(t, "the run to end", func() bool {
		var v struct{ Running bool }
		return json.Unmarshal(get(t, "http://"+lr.addr+"/api/snapshot"), &v) == nil && !v.Running
	})
	lr.cancel() // ends the linger
	if code := lr.wait(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, lr.stderr)
	}
}
