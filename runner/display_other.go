//go:build !unix

package runner

import "os"

// notifyResize does nothing where there is no SIGWINCH: the size is read
// again at each redraw anyway.
func notifyResize(chan<- os.Signal) (stop func()) { return func() {} }
