package connect

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"
)

// Envelope is a broker message with the properties a stage may want, as
// the JSON record that `envelope: true` hands on (and takes, on output).
// A field is named once for the three brokers, and left out where the
// broker or the message has no such thing:
//
//	body, body_base64  the message (body_base64 for one that is not UTF-8)
//	message_id         the id its producer gave it: AMQP message_id, NATS Nats-Msg-Id
//	correlation_id     AMQP correlation_id
//	routing_key        AMQP routing key
//	subject            NATS subject
//	stream             NATS JetStream stream, Redis stream
//	sequence           NATS JetStream stream sequence
//	entry_id           Redis stream entry id
//	list               Redis list
//	headers            AMQP headers (those with a text or number value), NATS headers (the first value of each)
//	redelivered        delivered before and not acked: AMQP's flag, JetStream's delivery count
type Envelope struct {
	Body          string            `json:"body,omitempty"`
	BodyBase64    string            `json:"body_base64,omitempty"`
	MessageID     string            `json:"message_id,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	RoutingKey    string            `json:"routing_key,omitempty"`
	Subject       string            `json:"subject,omitempty"`
	Stream        string            `json:"stream,omitempty"`
	Sequence      uint64            `json:"sequence,omitempty"`
	EntryID       string            `json:"entry_id,omitempty"`
	List          string            `json:"list,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Redelivered   bool              `json:"redelivered,omitempty"`
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
