package transport

import (
	"testing"
	"time"
)

// TestAckState: a worker says once that the broker stopped acking its
// results and once that it acks again, however many publishes tell it:
// the acks of publishes sent during a stall time out one by one after it
// ended, and say nothing new.
func TestAckState(t *testing.T) {
	var a ackState
	before := time.Now()
	if !a.change(before, false) {
		t.Fatal("the first timeout does not say the broker stopped acking")
	}
	if a.change(before, false) {
		t.Error("a second timeout says it again")
	}
	after := time.Now().Add(time.Millisecond)
	if !a.change(after, true) {
		t.Fatal("an ack of a publish sent after the stall began does not say acks came again")
	}
	if a.change(before, false) {
		t.Error("the timeout of a publish sent before acks came again says the broker stopped acking")
	}
	if !a.change(time.Now().Add(time.Millisecond), false) {
		t.Error("the timeout of a publish sent after acks came again does not say so")
	}
}
