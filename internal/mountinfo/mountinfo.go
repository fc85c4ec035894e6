// Package mountinfo decodes fields of /proc/self/mountinfo, shared by the
// node plugin and the test fixtures.
package mountinfo

import (
	"strconv"
	"strings"
)

// Unescape decodes the octal escapes the kernel writes in mountinfo paths
// (\040 for a space, \011 tab, \012 newline, \134 backslash).
func Unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
