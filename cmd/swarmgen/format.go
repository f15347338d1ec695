package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// buildVersion is the CLI's version; node_cmds.go sets it to the node's.
var buildVersion = "0.1.0-dev"

func version() string { return buildVersion }

// sizeUnits maps a size suffix (lower case, without a trailing "b") to its
// multiplier: k/m/g/t are powers of 1000, ki/mi/gi/ti powers of 1024.
var sizeUnits = map[string]float64{
	"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15,
	"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40, "pi": 1 << 50,
}

// parseSize parses a human size: "8Gi", "512M", "1.5GiB", "100kb", "4096".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	if unit != "b" {
		unit = strings.TrimSuffix(unit, "b")
	} else {
		unit = ""
	}
	mul, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (B, K, M, G, T, Ki, Mi, Gi, Ti)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	v := f * mul
	if v < 0 || v > math.MaxInt64/2 || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: out of range", s)
	}
	return int64(math.Round(v)), nil
}

// formatSize renders bytes in binary units: "512", "1.5Ki", "7.8Gi".
func formatSize(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	units := []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	f := float64(n)
	u := -1
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if f >= 10 {
		return fmt.Sprintf("%.0f%s", f, units[u])
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0") + units[u]
}

// formatDuration renders d coarsely: "45s", "3m20s", "2h5m", "3d4h".
func formatDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// ago renders how long before now t was; "-" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "just now"
	}
	return formatDuration(now.Sub(t)) + " ago"
}

// shortID shortens a peer ID for tables. libp2p Ed25519 IDs all start with
// "12D3KooW", so the tail is what tells them apart.
func shortID(id string) string {
	if len(id) <= 12 {
		return id
	}
	return "…" + id[len(id)-10:]
}

// formatCPU renders a core count without trailing zeros.
func formatCPU(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// table writes aligned columns; Flush when done.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// cell makes a string safe for a table cell: no tabs or line breaks, which
// would break the alignment, and no terminal control characters from
// untrusted peers.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}

// clean strips terminal control characters from multi-line text (logs)
// but keeps newlines and tabs.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}
