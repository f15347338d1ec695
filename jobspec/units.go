package jobspec

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxBytesValue bounds any memory figure (1 PiB): more is a typo or hostile.
const maxBytesValue = 1 << 50

var byteSuffixes = []struct {
	suffix string
	mult   float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"k", 1e3}, {"B", 1},
}

// ParseBytes parses a memory size: "4Gi", "512Mi", "2G", "1.5Gi" or a plain
// byte count "1048576". Binary suffixes (Ki, Mi, Gi, Ti) are powers of 1024,
// decimal ones (K, M, G, T, optionally with B) powers of 1000, as in
// Kubernetes quantities.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := 1.0
	num := s
	for _, b := range byteSuffixes {
		if strings.HasSuffix(s, b.suffix) {
			mult, num = b.mult, strings.TrimSpace(strings.TrimSuffix(s, b.suffix))
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || num == "" {
		return 0, fmt.Errorf("%q is not a size like 4Gi, 512Mi, 2G or a byte count", s)
	}
	v := f * mult
	if v < 0 || v > maxBytesValue {
		return 0, fmt.Errorf("%q out of range [0, 1PiB]", s)
	}
	return int64(v), nil
}

// FormatBytes writes n the way ParseBytes reads it, using the largest binary
// suffix that divides it exactly.
func FormatBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// bytesValue decodes a memory field: a string ParseBytes accepts or a
// number of bytes.
func bytesValue(raw json.RawMessage, path string) (int64, error) {
	switch kindOf(raw) {
	case "a number":
		return asInt(raw, path, 0, maxBytesValue)
	case "a string":
		s, err := asString(raw, path, 64)
		if err != nil {
			return 0, err
		}
		n, err := ParseBytes(s)
		if err != nil {
			return 0, fieldErr(path, "%v", err)
		}
		return n, nil
	default:
		return 0, fieldErr(path, "must be a size like \"4Gi\" or a number of bytes, got %s", kindOf(raw))
	}
}

// maxCPUCores bounds a CPU request.
const maxCPUCores = 4096

// cpuValue decodes a CPU request in cores: a number (1.5) or a string
// ("1.5" or "1500m") and returns thousandths of a core.
func cpuValue(raw json.RawMessage, path string) (int64, error) {
	var cores float64
	switch kindOf(raw) {
	case "a number":
		f, err := asNumber(raw, path)
		if err != nil {
			return 0, err
		}
		cores = f
	case "a string":
		s, err := asString(raw, path, 32)
		if err != nil {
			return 0, err
		}
		if m, ok := strings.CutSuffix(s, "m"); ok {
			n, err := strconv.ParseInt(m, 10, 64)
			if err != nil {
				return 0, fieldErr(path, "%q is not a CPU amount like 2, 0.5 or 500m", s)
			}
			cores = float64(n) / 1000
		} else {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return 0, fieldErr(path, "%q is not a CPU amount like 2, 0.5 or 500m", s)
			}
			cores = f
		}
	default:
		return 0, fieldErr(path, "must be a number of cores, got %s", kindOf(raw))
	}
	if math.IsNaN(cores) || cores < 0 || cores > maxCPUCores {
		return 0, fieldErr(path, "%v cores out of range [0, %d]", cores, maxCPUCores)
	}
	return int64(math.Round(cores * 1000)), nil
}

// durationValue decodes a duration: a Go duration string ("10m", "1h30m")
// or a number of seconds. It must lie in (0, max].
func durationValue(raw json.RawMessage, path string, max time.Duration) (time.Duration, error) {
	var d time.Duration
	switch kindOf(raw) {
	case "a number":
		f, err := asNumber(raw, path)
		if err != nil {
			return 0, err
		}
		if f > max.Seconds() || f <= 0 {
			return 0, fieldErr(path, "%vs out of range (0, %s]", f, max)
		}
		d = time.Duration(f * float64(time.Second))
	case "a string":
		s, err := asString(raw, path, 64)
		if err != nil {
			return 0, err
		}
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fieldErr(path, "%q is not a duration like \"10m\" or \"90s\"", s)
		}
	default:
		return 0, fieldErr(path, "must be a duration like \"10m\" or a number of seconds, got %s", kindOf(raw))
	}
	if d <= 0 || d > max {
		return 0, fieldErr(path, "%s out of range (0, %s]", d, max)
	}
	return d, nil
}
