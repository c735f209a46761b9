//go:build race

package nbd

// raceEnabled: the race detector slows the server several times; tests that
// move a lot of data scale down under it.
const raceEnabled = true
