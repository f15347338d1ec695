package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/swarmgen/swarmgen/api"
)

// bodyFlags are the job-body fields settable from `job submit` flags.
// A nil pointer means the flag was not given.
type bodyFlags struct {
	template *string
	replicas *int
	prompt   *string
	sets     []string // key=value, applied to params.app in order
}

// readBody reads a job body file (or stdin for "-") with a size limit.
func readBody(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, api.MaxRequestBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading job body %s: %w", name, err)
	}
	if len(data) > api.MaxRequestBody {
		return nil, fmt.Errorf("job body %s: larger than %d bytes", name, api.MaxRequestBody)
	}
	return data, nil
}

// composeBody builds the POST /v1/jobs body: the file's JSON object (or an
// empty one) with the flags applied on top. Keys it does not touch pass
// through unchanged, numbers keep their exact text. The result is compact
// JSON with sorted keys.
func composeBody(file []byte, f bodyFlags) ([]byte, error) {
	body := map[string]any{}
	if file != nil {
		dec := json.NewDecoder(bytes.NewReader(file))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("job body: not valid JSON: %w", err)
		}
		if dec.More() {
			return nil, fmt.Errorf("job body: trailing data after the JSON object")
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("job body: must be a JSON object, not %s", jsonKind(v))
		}
		body = m
	}
	if f.template != nil {
		// The API decodes keys case-insensitively; drop other spellings so
		// the flag is the only template key left.
		for k := range body {
			if strings.EqualFold(k, "templateID") {
				delete(body, k)
			}
		}
		body["templateID"] = *f.template
	}
	if file == nil && f.template == nil {
		return nil, usageErrorf("job submit: give a job body FILE (or - for stdin), or --template")
	}
	if f.replicas != nil {
		if *f.replicas < 1 {
			return nil, usageErrorf("--replicas %d: must be at least 1", *f.replicas)
		}
		p, err := objectAt(body, "", "params", "partitioner")
		if err != nil {
			return nil, err
		}
		p["num_replicas"] = *f.replicas
	}
	if f.prompt != nil || len(f.sets) > 0 {
		app, err := objectAt(body, "", "params", "app")
		if err != nil {
			return nil, err
		}
		if f.prompt != nil {
			app["prompt"] = *f.prompt
		}
		for _, s := range f.sets {
			if err := applySet(app, s); err != nil {
				return nil, err
			}
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return nil, fmt.Errorf("job body: encoding: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// objectAt returns the object at path in m, creating missing levels; it
// fails if something other than an object is in the way.
func objectAt(m map[string]any, where string, path ...string) (map[string]any, error) {
	cur := m
	for i, k := range path {
		next, ok := cur[k]
		if !ok || next == nil {
			n := map[string]any{}
			cur[k] = n
			cur = n
			continue
		}
		o, ok := next.(map[string]any)
		if !ok {
			name := strings.Join(path[:i+1], ".")
			if where != "" {
				name = where + "." + name
			}
			return nil, fmt.Errorf("job body: %s is %s, want an object", name, jsonKind(next))
		}
		cur = o
	}
	return cur, nil
}

// applySet applies one --set key=value to params.app. The key may be dotted
// (a.b=1 sets params.app.a.b). The value is JSON if it parses as JSON,
// else the literal string: --set steps=20 is a number, --set style=oil a
// string, --set 'size=[512,512]' an array, --set 'name="20"' the string 20.
func applySet(app map[string]any, kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return usageErrorf("--set %q: want key=value", kv)
	}
	parts := strings.Split(key, ".")
	for _, p := range parts {
		if p == "" {
			return usageErrorf("--set %q: empty path element in key", kv)
		}
	}
	obj, err := objectAt(app, "params.app", parts[:len(parts)-1]...)
	if err != nil {
		return usageErrorf("--set %q: %w", kv, err)
	}
	obj[parts[len(parts)-1]] = parseSetValue(val)
	return nil
}

func parseSetValue(s string) any {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil && !dec.More() {
		return v
	}
	return s
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
