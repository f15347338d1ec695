package bucket

import (
	"fmt"
	"net/url"
	"strings"
)

// maxURLPath bounds the escaped request path the gateway accepts.
const maxURLPath = 4096

// splitURLPath splits an escaped URL path ("/a/b%20c/") into decoded,
// validated segments. It refuses, with an error wrapping ErrInvalidName:
// "." and ".." (also when percent-encoded), encoded separators (%2F, %5C),
// backslashes, NUL and other control bytes, empty segments ("//"), and
// paths that are not absolute. trailingSlash reports a final "/".
func splitURLPath(escaped string) (segs []string, trailingSlash bool, err error) {
	if len(escaped) > maxURLPath {
		return nil, false, fmt.Errorf("%w: path of %d bytes, limit %d", ErrInvalidName, len(escaped), maxURLPath)
	}
	if !strings.HasPrefix(escaped, "/") {
		return nil, false, fmt.Errorf("%w: path %q is not absolute", ErrInvalidName, escaped)
	}
	rest := escaped[1:]
	if rest == "" {
		return nil, true, nil
	}
	if strings.HasSuffix(rest, "/") {
		trailingSlash = true
		rest = rest[:len(rest)-1]
	}
	for _, raw := range strings.Split(rest, "/") {
		lower := strings.ToLower(raw)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			return nil, false, fmt.Errorf("%w: encoded separator in %q", ErrInvalidName, raw)
		}
		seg, err := url.PathUnescape(raw)
		if err != nil {
			return nil, false, fmt.Errorf("%w: bad escape in %q: %w", ErrInvalidName, raw, err)
		}
		if err := ValidateName(seg); err != nil {
			return nil, false, err
		}
		segs = append(segs, seg)
	}
	return segs, trailingSlash, nil
}

// escapePath percent-encodes slash-joined validated segments for a URL.
func escapePath(segs ...string) string {
	var b strings.Builder
	for i, s := range segs {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}
