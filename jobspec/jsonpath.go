package jobspec

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The job body is decoded level by level from json.RawMessage so that every
// error carries the exact path and members are checked in document order
// ("the first bad field" is well defined, unlike with a Go map).

// member is one key/value of a JSON object, in document order.
type member struct {
	key string
	val json.RawMessage
}

// join appends key to a JSON path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends an array index to a JSON path.
func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// kindOf names the JSON type of raw, for "must be X, got Y" messages.
func kindOf(raw json.RawMessage) string {
	t := bytes.TrimLeft(raw, " \t\r\n")
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func isNull(raw json.RawMessage) bool { return kindOf(raw) == "null" }

// objectMembers splits a JSON object into its members in document order,
// leaving out members whose value is null (clients often serialise unset
// optional fields as null). Duplicate keys are an error: which one would
// win is decoder-dependent.
func objectMembers(raw json.RawMessage, path string) ([]member, error) {
	if k := kindOf(raw); k != "an object" {
		return nil, fieldErr(path, "must be an object, got %s", k)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, fieldErr(path, "invalid JSON: %v", err)
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fieldErr(path, "invalid JSON: %v", err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fieldErr(join(path, key), "invalid JSON: %v", err)
		}
		if seen[key] {
			return nil, fieldErr(join(path, key), "duplicate field")
		}
		seen[key] = true
		if isNull(v) {
			continue // null means "not set": the default applies
		}
		out = append(out, member{key, v})
	}
	return out, nil
}

// arrayItems splits a JSON array into its items.
func arrayItems(raw json.RawMessage, path string, maxItems int) ([]json.RawMessage, error) {
	if k := kindOf(raw); k != "an array" {
		return nil, fieldErr(path, "must be an array, got %s", k)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fieldErr(path, "invalid JSON: %v", err)
	}
	if maxItems > 0 && len(items) > maxItems {
		return nil, fieldErr(path, "too many items: %d, limit %d", len(items), maxItems)
	}
	return items, nil
}

// asString decodes a JSON string of at most maxLen bytes (0: no limit) that
// is valid UTF-8 without NUL characters.
func asString(raw json.RawMessage, path string, maxLen int) (string, error) {
	if k := kindOf(raw); k != "a string" {
		return "", fieldErr(path, "must be a string, got %s", k)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldErr(path, "invalid string: %v", err)
	}
	if maxLen > 0 && len(s) > maxLen {
		return "", fieldErr(path, "too long: %d bytes, limit %d", len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return "", fieldErr(path, "not valid UTF-8")
	}
	if strings.ContainsRune(s, 0) {
		return "", fieldErr(path, "contains a NUL character")
	}
	return s, nil
}

// asNumber decodes a finite JSON number.
func asNumber(raw json.RawMessage, path string) (float64, error) {
	if k := kindOf(raw); k != "a number" {
		return 0, fieldErr(path, "must be a number, got %s", k)
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fieldErr(path, "number out of range: %s", truncate(string(raw), 40))
	}
	return f, nil
}

// asInt decodes a JSON integer in [lo, hi]. Integral floats such as 5.0 are
// accepted (some JSON writers emit them); 5.5 is not.
func asInt(raw json.RawMessage, path string, lo, hi int64) (int64, error) {
	if k := kindOf(raw); k != "a number" {
		return 0, fieldErr(path, "must be an integer, got %s", k)
	}
	s := string(bytes.TrimSpace(raw))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, fieldErr(path, "must be an integer, got %s", truncate(s, 40))
		}
		n = int64(f)
	}
	if n < lo || n > hi {
		return 0, fieldErr(path, "%d out of range [%d, %d]", n, lo, hi)
	}
	return n, nil
}

// asBool decodes a JSON boolean.
func asBool(raw json.RawMessage, path string) (bool, error) {
	if k := kindOf(raw); k != "a boolean" {
		return false, fieldErr(path, "must be a boolean, got %s", k)
	}
	return bytes.Equal(bytes.TrimSpace(raw), []byte("true")), nil
}

// asStringMap decodes an object of string values.
func asStringMap(raw json.RawMessage, path string, maxItems, maxLen int) (map[string]string, error) {
	ms, err := objectMembers(raw, path)
	if err != nil {
		return nil, err
	}
	if len(ms) > maxItems {
		return nil, fieldErr(path, "too many entries: %d, limit %d", len(ms), maxItems)
	}
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		if m.key == "" || len(m.key) > maxLen {
			return nil, fieldErr(join(path, m.key), "key must be 1..%d bytes", maxLen)
		}
		s, err := asString(m.val, join(path, m.key), maxLen)
		if err != nil {
			return nil, err
		}
		out[m.key] = s
	}
	return out, nil
}

// asStringList decodes an array of strings.
func asStringList(raw json.RawMessage, path string, maxItems, maxLen int) ([]string, error) {
	items, err := arrayItems(raw, path, maxItems)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(items))
	for i, it := range items {
		if out[i], err = asString(it, index(path, i), maxLen); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// knownList formats the accepted keys for an "unknown field" message.
func knownList(keys []string) string { return strings.Join(keys, ", ") }
