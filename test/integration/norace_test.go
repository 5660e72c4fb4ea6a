//go:build !race

package integration

// raceEnabled tells whether the test binary was built with -race.
const raceEnabled = false
