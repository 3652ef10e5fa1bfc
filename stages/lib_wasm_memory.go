package stages

import (
	"sync/atomic"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// wasmMemory is the linear memory of one module instance, in an anonymous
// mapping of max_memory bytes made when the instance starts. Growing it
// hands the guest more of the mapping, which the kernel backs with pages
// only as they are touched: unlike wazero's default, a []byte that is
// copied into a larger one on every memory.grow, it never holds two
// copies, and it returns to the system at once when the instance ends.
//
// A grow past max_memory is refused, which a module sees as memory.grow
// returning -1 (the Go runtime then dies with "out of memory"); refused
// records it, so that the record's error can say so.
type wasmMemory struct {
	buf     []byte
	refused atomic.Bool
	// over says the module asked for more than max_memory to start with.
	over   atomic.Bool
	mapped bool // buf is a mapping, to unmap in Free
}

// allocator returns the experimental.MemoryAllocator that makes m's
// mapping, limit bytes.
func (m *wasmMemory) allocator(limit uint64) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(capacity, maxBytes uint64) experimental.LinearMemory {
		size := min(limit, maxBytes)
		if capacity > size {
			m.over.Store(true)
			size = capacity // the instance is refused once made: see over
		}
		buf, err := syscall.Mmap(-1, 0, int(max(size, 1)), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
		if err != nil {
			m.over.Store(true) // the instance is refused: see over
			buf = make([]byte, capacity)
		} else {
			m.mapped = true
		}
		m.buf = buf
		return m
	})
}

// Reallocate implements experimental.LinearMemory.
func (m *wasmMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		m.refused.Store(true)
		return nil
	}
	return m.buf[:size]
}

// Free implements experimental.LinearMemory. wazero calls it when the
// module is closed, which run does only after _start has returned.
func (m *wasmMemory) Free() {
	if m.mapped {
		syscall.Munmap(m.buf[:cap(m.buf)])
		m.mapped = false
	}
	m.buf = nil
}
