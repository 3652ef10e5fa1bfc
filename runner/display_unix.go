//go:build unix

package runner

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyResize sends on c when the terminal changes size.
func notifyResize(c chan<- os.Signal) (stop func()) {
	signal.Notify(c, syscall.SIGWINCH)
	return func() { signal.Stop(c) }
}
