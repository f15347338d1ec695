// Package jobspec parses and validates job request bodies, holds the job
// templates (built-in and operator-supplied) and splits a job into tasks
// (partitioners).
//
// Everything here is pure: no network and no clock. The only disk access is
// Registry.LoadDir, which reads an operator's template directory. Every
// error about a job body is a *FieldError naming the JSON path of the first
// bad field, so that the HTTP API can answer {"error", "field"}.
package jobspec
