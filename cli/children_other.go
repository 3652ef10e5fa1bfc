//go:build !linux

package cli

// Elsewhere than Linux, flowrun cannot inherit orphans: a plugin's child
// that leaves its process group may outlive the run.

func becomeSubreaper() {}
func reapOrphans()     {}
func killChildren()    {}
