package stages

// Exported for the black-box tests of the json protocol's decoder.

// ParseExecAnswer decodes an answer line as the exec stage does; fast
// says whether to take the hand-written path when the line allows it.
func ParseExecAnswer(line []byte, fast bool) (id int64, records []string, recErr, err error) {
	var a execAnswer
	if fast {
		err = parseExecAnswer(line, &a)
	} else {
		err = parseExecAnswerJSON(line, &a)
	}
	for _, r := range a.records {
		records = append(records, string(r))
	}
	if a.bad != nil {
		return a.id, records, a.bad, err
	}
	return a.id, records, a.err, err
}

// AppendExecRequest is the request line of the json protocol.
var AppendExecRequest = appendExecRequest
