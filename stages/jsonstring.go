package stages

import "github.com/flowrun/flowrun/internal/jsontext"

// AppendJSONString appends s as a JSON string, for stages (and the runner)
// that write JSON without encoding/json's reflection. Unlike encoding/json
// it leaves <, > and & alone: the output is data, not HTML. Invalid UTF-8
// becomes U+FFFD, as with encoding/json.
func AppendJSONString[T string | []byte](b []byte, s T) []byte {
	return jsontext.AppendString(b, s)
}
