package bucket

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLength is the longest file or directory name accepted (bytes).
const MaxNameLength = 255

// ValidateName reports whether name is usable as one path element of a
// bucket or export: not empty, not "." or "..", no '/', '\\' or control
// bytes (NUL included), valid UTF-8, at most MaxNameLength bytes. The error
// wraps ErrInvalidName and says what was wrong.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q is a relative path element", ErrInvalidName, name)
	case len(name) > MaxNameLength:
		return fmt.Errorf("%w: name of %d bytes, limit %d", ErrInvalidName, len(name), MaxNameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidName, name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w: %q contains a path separator", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] == 0x7f {
			return fmt.Errorf("%w: %q contains control byte 0x%02x", ErrInvalidName, name, name[i])
		}
	}
	return nil
}

// splitRelPath splits a slash-separated relative path into validated
// elements. Leading or doubled slashes, "." and ".." are refused.
func splitRelPath(p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("%w: empty path", ErrInvalidName)
	}
	if strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%w: %q is absolute", ErrInvalidName, p)
	}
	parts := strings.Split(p, "/")
	if len(parts) > DefaultMaxDepth {
		return nil, fmt.Errorf("%w: %q is deeper than %d elements", ErrInvalidName, p, DefaultMaxDepth)
	}
	for _, e := range parts {
		if err := ValidateName(e); err != nil {
			return nil, fmt.Errorf("path %q: %w", p, err)
		}
	}
	return parts, nil
}
