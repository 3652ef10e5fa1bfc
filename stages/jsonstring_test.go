package stages_test

import (
	"encoding/json"
	"testing"

	"github.com/flowrun/flowrun/stages"
)

func TestAppendJSONString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`a "q" \ b`, `"a \"q\" \\ b"`},
		{"tab\tnl\ncr\r", `"tab\tnl\ncr\r"`},
		{"\x00\x1f", `"\u0000\u001f"`},
		{"<a&b>", `"<a&b>"`},
		{"héllo, 世界", `"héllo, 世界"`},
		{"bad \xff byte", `"bad \ufffd byte"`},
		{"cut \xe4\xb8", `"cut \ufffd\ufffd"`},
	}
	for _, tt := range tests {
		got := string(stages.AppendJSONString([]byte("x"), tt.in))
		if got != "x"+tt.want {
			t.Errorf("%q: got %s, want %s", tt.in, got[1:], tt.want)
		}
		if b := stages.AppendJSONString(nil, []byte(tt.in)); string(b) != tt.want {
			t.Errorf("%q as bytes: got %s", tt.in, b)
		}
		var back string
		if err := json.Unmarshal([]byte(tt.want), &back); err != nil {
			t.Errorf("%s is not JSON: %v", tt.want, err)
		}
	}
}
