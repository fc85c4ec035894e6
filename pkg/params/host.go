package params

import (
	"errors"
	"fmt"
	"strings"
)

// ErrOptionLike marks a value that a command line would read as an option
// (a leading '-'): hostile rather than mistyped, whatever object carries it.
var ErrOptionLike = errors.New("must not start with '-' (a command line would read it as an option)")

// CheckHost is the one rule for a server's host name or address, applied to
// StorageClass parameters here and to volume IDs by pkg/volid. A leading '-'
// is refused because the name reaches mount(8), ssh and the gluster CLI as an
// argument, where it would read as an option.
func CheckHost(h string) error {
	switch {
	case h == "" || len(h) > 253:
		return fmt.Errorf("server %q: want a host name or IP address of 1 to 253 characters", h)
	case strings.HasPrefix(h, "-"):
		return fmt.Errorf("server %q: %w", h, ErrOptionLike)
	}
	for _, r := range h {
		ok := r == '.' || r == '-' || r == ':' || r == '[' || r == ']' || r == '_' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("server %q contains %q", h, r)
		}
	}
	return nil
}
