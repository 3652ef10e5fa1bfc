package connect

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"
)

// Envelope is a broker message with the properties a stage may want, as
// the JSON record that `envelope: true` hands on (and takes, on output).
type Envelope struct {
	Body          string `json:"body,omitempty"`
	BodyBase64    string `json:"body_base64,omitempty"` // for a body that is not UTF-8
	MessageID     string `json:"message_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	RoutingKey    string `json:"routing_key,omitempty"`
	Subject       string `json:"subject,omitempty"`
}

// Wrap returns e with body as the JSON record of an envelope.
func (e Envelope) Wrap(body []byte) []byte {
	if utf8.Valid(body) {
		e.Body = string(body)
	} else {
		e.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	b, _ := json.Marshal(e)
	return b
}

// Unwrap reads an envelope record back; a record that is not an
// envelope is all body.
func Unwrap(rec []byte) (Envelope, []byte) {
	var e Envelope
	if json.Unmarshal(rec, &e) != nil {
		return Envelope{}, rec
	}
	if e.BodyBase64 != "" {
		b, err := base64.StdEncoding.DecodeString(e.BodyBase64)
		if err == nil {
			return e, b
		}
	}
	return e, []byte(e.Body)
}
