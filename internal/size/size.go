// Package size reads sizes in bytes ("64KiB", "16MiB"): the one parser
// for stage options (stages.ParseSize), the pipeline's max_record_size and
// the file connector's.
package size

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first, so that "KiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// Parse reads a size in bytes: "4096", "64KiB", "16MiB", "1GiB" (or the
// decimal KB, MB, GB), with an optional space before the unit.
func Parse(s string) (int, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (like 65536, 64KiB, 16MiB, 1GiB)", s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("size %q must be more than 0", s)
	}
	if n > math.MaxInt/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int(n * mult), nil
}
