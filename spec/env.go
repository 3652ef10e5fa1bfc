package spec

import (
	"fmt"
	"strings"
)

// expand replaces ${VAR} and ${VAR:-default} in s with values from env.
// As in the shell, the default also stands in for a variable that is set
// but empty; it is taken literally, up to the first "}". $${ is a literal
// ${, and a $ not followed by { is itself.
//
// Expansion is textual only: nothing is ever run, so "$(rm -rf /)" stays
// exactly that.
func expand(s string, env func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			b.WriteString("${")
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q (write $${ for a literal ${)", s)
			}
			name, def, hasDef := strings.Cut(s[2:end], ":-")
			if !validVarName(name) {
				return "", fmt.Errorf("bad variable name %q in %q", name, s[:end+1])
			}
			v, ok := env(name)
			switch {
			case hasDef && v == "":
				v = def
			case !ok:
				return "", fmt.Errorf("variable %s is not set (write ${%s:-default} to give a default)", name, name)
			}
			b.WriteString(v)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
