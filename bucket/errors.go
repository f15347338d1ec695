package bucket

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is; the scheduler retries a
// task elsewhere on ErrCorruptBlock or ErrMissingBlock.
var (
	// ErrCorruptBlock means a peer sent bytes that do not hash to the CID
	// they were sent for, or a block the DAG does not need.
	ErrCorruptBlock = errors.New("corrupt block")
	// ErrUnexpectedBlock means a peer sent a block that is not linked from
	// the blocks verified so far. It is also an ErrCorruptBlock.
	ErrUnexpectedBlock = fmt.Errorf("%w: block not requested by the DAG", ErrCorruptBlock)
	// ErrMissingBlock means a block of the DAG could not be obtained.
	ErrMissingBlock = errors.New("missing block")
	// ErrTooLarge means a size limit was exceeded.
	ErrTooLarge = errors.New("size limit exceeded")
	// ErrInvalidName means a file or path name was refused (separators,
	// "..", NUL, absolute, too long).
	ErrInvalidName = errors.New("invalid name")
	// ErrUnsupported means the content is of a kind this package does not
	// handle (symlinks, devices, HAMT directories, unknown codecs).
	ErrUnsupported = errors.New("unsupported content")
	// ErrNotFound means a path or bucket does not exist.
	ErrNotFound = errors.New("not found")
	// ErrClosed means the Store was closed.
	ErrClosed = errors.New("store closed")
)
