//go:build !linux

package inference

import "errors"

// removeTaskLayout has no fast path here: CleanupTaskDir uses os.RemoveAll.
func removeTaskLayout(dir string) error { return errors.ErrUnsupported }
