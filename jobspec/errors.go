package jobspec

import "fmt"

// FieldError says what is wrong with one field of a job body (or of a
// template file). Path is a JSON path like "params.partitioner.num_replicas"
// or "dataSource.files[2].name"; it is empty when the body as a whole is bad
// (not JSON, too large, trailing data).
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func fieldErr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}
