//go:build race

package bucket

// raceEnabled: the race detector slows pebble and hashing ~10x; the large
// transfer test shrinks under it (the full 256 MB runs without -race).
const raceEnabled = true
