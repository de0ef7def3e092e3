//go:build race

package interop

// raceEnabled makes the suite build the node with -race when the tests run with -race.
const raceEnabled = true
