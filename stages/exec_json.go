package stages

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// The json protocol of exec stream mode (DESIGN.md, "Plugins"): a request
// is one line {"id": N, "record": "..."}, or {"id": N, "record_base64":
// "..."} for a record that is not UTF-8; an answer is one line {"id": N,
// "records": [...]} or {"id": N, "error": "..."}, in any order. Any other
// line the plugin prints is its log.

// appendExecRequest appends the request line for record rec with id.
func appendExecRequest(b []byte, id int64, rec []byte) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, id, 10)
	if utf8.Valid(rec) {
		b = append(b, `,"record":`...)
		b = AppendJSONString(b, rec)
	} else {
		b = append(b, `,"record_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, rec)
		b = append(b, '"')
	}
	return append(b, '}', '\n')
}

// execAnswer is one answer line, decoded.
type execAnswer struct {
	id      int64
	records [][]byte // the records; their bytes may alias the line
	err     error    // the plugin's error for the record
	bad     error    // what is wrong with an answer that names its record but cannot be one
}

// errExecNotAnswer says that a line is not an answer, so it is the
// plugin's log.
var errExecNotAnswer = errors.New("not an answer")

// parseExecAnswer decodes line as an answer, reusing a.records. A line is
// an answer when it is a JSON object with an "id" and one of "records",
// "records_base64" or "error"; any other line, including a JSON log line
// with an "id" of its own, returns errExecNotAnswer. A line that names
// itself an answer but cannot be one (an id that is not a whole number, or
// records that are not a list of strings) is a protocol fault, returned
// as the error. An answer that is malformed for its record alone sets
// a.bad instead.
//
// The common shape, {"id": N, "records": ["..."]} with the id first and
// strings without escapes, is decoded by hand and aliases line; anything
// else goes through encoding/json.
func parseExecAnswer(line []byte, a *execAnswer) error {
	a.records, a.err, a.bad = a.records[:0], nil, nil
	if ok := parseExecAnswerFast(line, a); ok {
		return nil
	}
	line = bytes.TrimPrefix(line, execBOM)
	if i := execSkipSpace(line, 0); i == len(line) || line[i] != '{' {
		return errExecNotAnswer // a log line of text, the usual kind
	}
	a.records = a.records[:0]
	return parseExecAnswerJSON(line, a)
}

// execBOM is a byte order mark, which some runtimes (.NET, PowerShell)
// print before their first line of UTF-8: it is not part of the answer.
var execBOM = []byte("\ufeff")

// parseExecAnswerJSON is parseExecAnswer through encoding/json.
func parseExecAnswerJSON(line []byte, a *execAnswer) error {
	line = bytes.TrimPrefix(line, execBOM)
	var m map[string]json.RawMessage
	if json.Unmarshal(line, &m) != nil {
		return errExecNotAnswer
	}
	rawID, hasID := m["id"]
	rawRecs, hasRecs := m["records"]
	rawB64, hasB64 := m["records_base64"]
	rawErr, hasErr := m["error"]
	if !hasID || !hasRecs && !hasB64 && !hasErr {
		return errExecNotAnswer
	}
	id, err := strconv.ParseInt(string(rawID), 10, 64)
	if err != nil || id < 1 {
		return fmt.Errorf("printed an answer whose id %.40s is not one it was sent (ids are whole numbers from 1)", rawID)
	}
	a.id = id
	switch {
	case hasErr && string(rawErr) != "null":
		var msg string
		if json.Unmarshal(rawErr, &msg) != nil {
			a.bad = fmt.Errorf("the answer's error is %.40s, not a string", rawErr)
			return nil
		}
		a.err = errors.New(msg)
	case hasRecs:
		// null decodes as an empty list: a plugin whose score() returned
		// None would filter out every record, unseen.
		var recs []json.RawMessage
		if string(rawRecs) == "null" || json.Unmarshal(rawRecs, &recs) != nil {
			a.bad = fmt.Errorf(`the answer's "records" is %.40s, not a list`, rawRecs)
			return nil
		}
		for _, r := range recs {
			if len(r) > 0 && r[0] == '"' {
				var s string
				_ = json.Unmarshal(r, &s) // valid: it came out of a valid list
				a.records = append(a.records, []byte(s))
			} else {
				// A JSON value other than a string is a record of its JSON
				// text, so that a plugin for JSON records can answer with
				// objects rather than strings holding them.
				var c bytes.Buffer
				_ = json.Compact(&c, r)
				a.records = append(a.records, c.Bytes())
			}
		}
	case hasB64:
		var recs []string
		if string(rawB64) == "null" || json.Unmarshal(rawB64, &recs) != nil {
			a.bad = fmt.Errorf(`the answer's "records_base64" is %.40s, not a list of strings`, rawB64)
			return nil
		}
		for _, s := range recs {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				a.bad = fmt.Errorf(`the answer's "records_base64" holds %.40q, which is not base64`, s)
				return nil
			}
			a.records = append(a.records, b)
		}
	default:
		a.bad = errors.New(`the answer has "error": null and no "records"`)
	}
	return nil
}

// parseExecAnswerFast decodes {"id": N, "records": ["...", ...]} with
// optional white space, whose strings have no escapes, and reports
// whether line had that shape.
func parseExecAnswerFast(line []byte, a *execAnswer) bool {
	line = bytes.TrimPrefix(line, execBOM)
	i := execSkipSpace(line, 0)
	const idKey = `"id"`
	if i >= len(line) || line[i] != '{' {
		return false
	}
	i = execSkipSpace(line, i+1)
	if !bytes.HasPrefix(line[i:], []byte(idKey)) {
		return false
	}
	i = execSkipSpace(line, i+len(idKey))
	if i >= len(line) || line[i] != ':' {
		return false
	}
	i = execSkipSpace(line, i+1)
	start := i
	var id int64
	for i < len(line) && line[i] >= '0' && line[i] <= '9' && i-start < 18 {
		id = id*10 + int64(line[i]-'0')
		i++
	}
	if i == start || id < 1 || line[start] == '0' {
		return false
	}
	i = execSkipSpace(line, i)
	const recsKey = `"records"`
	if i >= len(line) || line[i] != ',' {
		return false
	}
	i = execSkipSpace(line, i+1)
	if !bytes.HasPrefix(line[i:], []byte(recsKey)) {
		return false
	}
	i = execSkipSpace(line, i+len(recsKey))
	if i >= len(line) || line[i] != ':' {
		return false
	}
	i = execSkipSpace(line, i+1)
	if i >= len(line) || line[i] != '[' {
		return false
	}
	i = execSkipSpace(line, i+1)
	if i < len(line) && line[i] == ']' {
		i++
	} else {
		for {
			if i >= len(line) || line[i] != '"' {
				return false
			}
			j := i + 1
			for j < len(line) && line[j] != '"' && line[j] != '\\' && line[j] >= 0x20 {
				j++
			}
			if j >= len(line) || line[j] != '"' {
				return false // an escape, a control character, or no end
			}
			a.records = append(a.records, line[i+1:j:j])
			i = execSkipSpace(line, j+1)
			if i < len(line) && line[i] == ',' {
				i = execSkipSpace(line, i+1)
				continue
			}
			if i < len(line) && line[i] == ']' {
				i++
				break
			}
			return false
		}
	}
	i = execSkipSpace(line, i)
	if i >= len(line) || line[i] != '}' {
		return false
	}
	if execSkipSpace(line, i+1) != len(line) {
		return false
	}
	a.id = id
	return true
}

func execSkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}
