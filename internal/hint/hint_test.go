package hint

import "testing"

func TestDidYouMean(t *testing.T) {
	names := []string{"upper", "lower", "grep", "replace"}
	tests := []struct{ in, want string }{
		{"uper", ` (did you mean "upper"?)`},
		{"UPPER", ` (did you mean "upper"?)`}, // case aside
		{"lwoer", ` (did you mean "lower"?)`}, // a transposition is one edit
		{"upper", ""},                         // itself
		{"foo", ""},                           // too far from anything
		{"", ""},
	}
	for _, tt := range tests {
		if got := DidYouMean(tt.in, names); got != tt.want {
			t.Errorf("DidYouMean(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := DidYouMean("x", nil); got != "" {
		t.Errorf("no candidates: got %q", got)
	}
}
