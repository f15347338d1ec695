package stablediffusion

import (
	"encoding/json"
	"fmt"
)

// DefaultModel is the model worker.py loads when a task names none.
const DefaultModel = "stabilityai/sd-turbo"

// maxModelRef matches worker.py's limit on app.model.
const maxModelRef = 512

// modelOf returns the model a task's app params ask for. Full validation is
// worker.py's job; here only the pool key is extracted, so a bad value is
// rejected with the same parameter name.
func modelOf(params json.RawMessage) (string, error) {
	if len(params) == 0 {
		return DefaultModel, nil
	}
	var app map[string]json.RawMessage
	if err := json.Unmarshal(params, &app); err != nil {
		return "", fmt.Errorf("param app: %w", err)
	}
	raw, ok := app["model"]
	if !ok {
		return DefaultModel, nil
	}
	var m string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &m) != nil {
		return "", fmt.Errorf("param app.model: must be a string")
	}
	if m == "" || len(m) > maxModelRef {
		return "", fmt.Errorf("param app.model: length %d out of range [1, %d]", len(m), maxModelRef)
	}
	return m, nil
}
