// Package bucket holds a node's content-addressed storage and everything
// built on it: the persistent blockstore, UnixFS import and export, the
// verified result transfer between peers (a CAR stream over
// protocol.FetchProtocol with a bitswap fallback), pins with TTLs and the
// garbage collector, job bucket assembly with its manifest, job inputs, and
// the read-only HTTP gateway that serves buckets and /ipfs/ paths.
//
// A Store is safe for concurrent use by multiple goroutines. It owns its
// goroutines (the GC loop, the fetch stream handlers) and stops them in Close.
package bucket
