package apps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/swarmgen/swarmgen/inference"
)

// ErrBadParams: params.json or an app param is malformed, unknown or out of
// range. The wrapping error names the param.
var ErrBadParams = errors.New("bad params")

// Param types.
const (
	TypeInt    = "int"
	TypeString = "string"
)

// Param describes one app param, for validation and for templates to show.
type Param struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"` // TypeInt or TypeString
	Default     any      `json:"default,omitempty"`
	Min         *int64   `json:"min,omitempty"`  // ints: smallest value
	Max         *int64   `json:"max,omitempty"`  // ints: largest value; strings: most bytes
	Enum        []string `json:"enum,omitempty"` // strings: the allowed values
	Description string   `json:"description,omitempty"`
}

func i64(v int64) *int64 { return &v }

// Contract is params.json as the executors write it.
type Contract struct {
	Job     string          `json:"job"`
	Task    string          `json:"task"`
	Index   int             `json:"index"`
	Count   int             `json:"count"`
	Attempt int             `json:"attempt"`
	Seed    int64           `json:"seed"`
	App     json.RawMessage `json:"app"`
}

// maxParamsFile bounds params.json: the app params plus the contract fields.
const maxParamsFile = inference.MaxParamsSize + 4096

// ReadContract reads and decodes the params.json at path.
func ReadContract(path string) (*Contract, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open params.json: %w", err)
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxParamsFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read params.json: %w", err)
	}
	c, err := DecodeContract(body)
	return c, body, err
}

// DecodeContract decodes a params.json body (at most MaxParamsSize+4 KiB).
func DecodeContract(body []byte) (*Contract, error) {
	if len(body) > maxParamsFile {
		return nil, fmt.Errorf("params.json is over %d bytes: %w", maxParamsFile, ErrBadParams)
	}
	var c Contract
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("params.json: %v: %w", err, ErrBadParams)
	}
	if dec.More() {
		return nil, fmt.Errorf("params.json: data after the object: %w", ErrBadParams)
	}
	return &c, nil
}

// Values are decoded app params, defaults applied: int64 for TypeInt,
// string for TypeString.
type Values map[string]any

// Int returns the int param name (0 when absent).
func (v Values) Int(name string) int64 { n, _ := v[name].(int64); return n }

// String returns the string param name ("" when absent).
func (v Values) String(name string) string { s, _ := v[name].(string); return s }

// DecodeParams checks raw (a JSON object or empty) against schema: every key
// must be a known param of the right type and range. Missing params take
// their defaults. Errors name the param.
func DecodeParams(schema []Param, raw json.RawMessage) (Values, error) {
	fields := map[string]json.RawMessage{}
	if t := bytes.TrimSpace(raw); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		if err := json.Unmarshal(t, &fields); err != nil {
			return nil, fmt.Errorf("app params are not a JSON object: %v: %w", err, ErrBadParams)
		}
	}
	known := make([]string, len(schema))
	for i, p := range schema {
		known[i] = p.Name
	}
	for k := range fields {
		if !slices.Contains(known, k) {
			return nil, fmt.Errorf("unknown param %q (known: %s): %w", k, strings.Join(known, ", "), ErrBadParams)
		}
	}
	vals := Values{}
	for _, p := range schema {
		f, ok := fields[p.Name]
		if !ok || bytes.Equal(bytes.TrimSpace(f), []byte("null")) {
			vals[p.Name] = p.Default
			continue
		}
		v, err := p.decode(f)
		if err != nil {
			return nil, fmt.Errorf("param %q: %w", p.Name, err)
		}
		vals[p.Name] = v
	}
	return vals, nil
}

// decode checks one value against p.
func (p Param) decode(f json.RawMessage) (any, error) {
	switch p.Type {
	case TypeInt:
		var n json.Number
		if err := json.Unmarshal(f, &n); err != nil {
			return nil, fmt.Errorf("want an integer, got %s: %w", trunc(f), ErrBadParams)
		}
		i, err := n.Int64()
		if err != nil {
			// Accept integral floats like 256.0, nothing else.
			fl, ferr := n.Float64()
			if ferr != nil || fl != math.Trunc(fl) || math.Abs(fl) > 1<<53 {
				return nil, fmt.Errorf("want an integer, got %s: %w", trunc(f), ErrBadParams)
			}
			i = int64(fl)
		}
		if (p.Min != nil && i < *p.Min) || (p.Max != nil && i > *p.Max) {
			return nil, fmt.Errorf("%d out of range %s: %w", i, p.rangeText(), ErrBadParams)
		}
		return i, nil
	case TypeString:
		var s string
		if err := json.Unmarshal(f, &s); err != nil {
			return nil, fmt.Errorf("want a string, got %s: %w", trunc(f), ErrBadParams)
		}
		if p.Max != nil && int64(len(s)) > *p.Max {
			return nil, fmt.Errorf("%d bytes, over %d: %w", len(s), *p.Max, ErrBadParams)
		}
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("not valid UTF-8: %w", ErrBadParams)
		}
		if len(p.Enum) > 0 && !slices.Contains(p.Enum, s) {
			return nil, fmt.Errorf("%q is not one of %s: %w", trunc([]byte(s)), strings.Join(p.Enum, ", "), ErrBadParams)
		}
		return s, nil
	}
	return nil, fmt.Errorf("schema has unknown type %q", p.Type)
}

func (p Param) rangeText() string {
	lo, hi := "-inf", "+inf"
	if p.Min != nil {
		lo = fmt.Sprint(*p.Min)
	}
	if p.Max != nil {
		hi = fmt.Sprint(*p.Max)
	}
	return lo + ".." + hi
}

// trunc shortens untrusted text quoted in errors.
func trunc(b []byte) string {
	const n = 40
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
