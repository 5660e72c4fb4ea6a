package plugin

import (
	"fmt"
	"runtime/debug"
)

// recoverInto turns a panic into an error in *err, with the stack, so that a
// bug triggered by one claim's input fails that claim and nothing else.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("internal error (please report it): %v\n%s", r, debug.Stack())
	}
}
