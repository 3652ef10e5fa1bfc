package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/cli"
	"github.com/flowrun/flowrun/connect"
)

// Every connector and option of the registry is in `flowrun connectors`.
func TestConnectorsListsRegistry(t *testing.T) {
	out, errs, code := runCLI(t, "", "connectors")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if len(connect.All()) < 3 {
		t.Fatalf("connectors registered: %d, want rabbitmq, redis and nats", len(connect.All()))
	}
	for _, s := range connect.All() {
		if !strings.Contains(out, s.URL) {
			t.Errorf("flowrun connectors lacks %s", s.Name)
		}
		for _, o := range s.Options {
			if !strings.Contains(out, o.Doc) {
				t.Errorf("flowrun connectors lacks %s's option %s", s.Name, o.Name)
			}
		}
	}
	_, errs, code = runCLI(t, "", "connectors", "rabitmq")
	if code != 2 || !strings.Contains(errs, `no connector "rabitmq" (did you mean "rabbitmq"?)`) {
		t.Errorf("unknown connector: exit %d, %q", code, errs)
	}
}

// TestReadmeConnectorTable keeps README.md's connector table identical to
// the registry; run with -update to rewrite it.
func TestReadmeConnectorTable(t *testing.T) {
	const begin, end = "<!-- connectors:begin -->\n", "<!-- connectors:end -->\n"
	readme := filepath.Join("..", "README.md")
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", begin, end)
	}
	table := cli.ConnectorsMarkdown()
	if got := s[i+len(begin) : j]; got != table {
		if *update {
			s = s[:i+len(begin)] + table + s[j:]
			if err := os.WriteFile(readme, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README.md's connector table differs from `flowrun connectors --markdown`; run go test ./cli -run ReadmeConnectorTable -update")
	}
}
